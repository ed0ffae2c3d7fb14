"""verify finds every planted fault, changes nothing without --repair, and --repair makes the cache clean."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache
from cachewatch.engine.cache.keys import key_to_name
from cachewatch.engine.jobs import SourceSpec, verify_cache

from tests.support.helpers import run_cli
from .conftest import make_source


def fill(cache_root: Path, src: Path) -> SourceSpec:
    spec = SourceSpec(dir=src, glob="**/*.edf", key="{relpath}")
    with Cache(cache_root, max_size="50MB", sweep=False) as c:
        for it in spec.items():
            c.put_file(it.key, it.path)
    return spec


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the root (index excluded: SQLite may checkpoint) with size and inode."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and "index.sqlite" not in p.name and not p.name.endswith(".lock") and p.name != "events.jsonl":
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_ino)
    return out


def rows(root: Path) -> list[tuple]:
    import sqlite3

    db = sqlite3.connect(root / ".cachewatch" / "index.sqlite")
    try:
        return sorted(db.execute("SELECT id, key, name, size, state, checksum, ino FROM entries").fetchall())
    finally:
        db.close()


def die_mid_write(root: Path, key: str) -> None:
    """A real writer killed by SIGKILL half way through a put: a reservation and a .part stay behind."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from cachewatch.engine import Cache
        from cachewatch.engine.cache.keys import key_to_name
        c = Cache({str(root)!r}, sweep=False)
        slot, part = c._reserve({key!r}, c._charge(100000))  # counted in the shared ledger from here on
        with open(c.meta_dir / "tmp" / part, "wb") as f:
            f.write(b"x" * 5000)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, SourceSpec]:
    src = make_source(tmp_path, 10)
    root = tmp_path / "cache"
    return root, fill(root, src)


def test_a_sound_cache_verifies_clean_and_complete(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    report = verify_cache(root, source=spec, workers=2)
    assert report.ok and report.complete
    assert report.problems == ()
    assert report.entries == 10 and report.source_items == 10 and report.complete_items == 10
    assert report.bytes_checked == sum(it.size_bytes for it in spec.items())


FAULTS = ["deleted_file", "flipped_byte", "truncated", "orphan", "stale_part", "missing_source_item", "counter_mismatch", "restored_inode"]


def plant(fault: str, root: Path, spec: SourceSpec, victim_index: int = 3) -> tuple[str, str | None]:
    """Plant one fault; return (problem kind verify must report, key it concerns)."""
    with Cache(root, sweep=False) as c:
        entries = c.entries(order="key")
        victim = entries[victim_index]
        if fault == "deleted_file":
            os.unlink(victim.path)
            return "missing_file", victim.key
        if fault == "flipped_byte":
            with open(victim.path, "r+b") as f:  # in place: same inode, same size
                f.seek(17)
                b = f.read(1)
                f.seek(17)
                f.write(bytes([b[0] ^ 0x01]))
            return "checksum_mismatch", victim.key
        if fault == "truncated":
            os.truncate(victim.path, victim.size_bytes // 2)
            return "size_mismatch", victim.key
        if fault == "orphan":
            key = "from/a/lost/index.bin"
            p = root / key_to_name(key)
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"sound content nobody indexed")
            return "orphan_file", key
        if fault == "counter_mismatch":
            with sqlite3.connect(root / ".cachewatch" / "index.sqlite", timeout=30) as db:  # a damaged counter row
                db.execute("UPDATE counters SET live_bytes = live_bytes + ?, entries = entries + 2", (4096 * 7,))
            return "counter_mismatch", None
        if fault == "restored_inode":
            tmp = victim.path.with_name("copy.tmp")
            shutil.copy2(victim.path, tmp)  # what a backup restore does: same bytes, new inode
            os.replace(tmp, victim.path)
            return "inode_mismatch", victim.key
    if fault == "stale_part":
        die_mid_write(root, "being/written.bin")
        return "stale_part", None
    if fault == "missing_source_item":
        new = spec.dir / "a" / "late_arrival.edf"  # type: ignore[operator]
        new.write_bytes(b"new recording")
        return "missing_entry", "a/late_arrival.edf"
    raise AssertionError(fault)


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_finds_each_planted_fault_and_repair_leaves_it_clean(fault: str, setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    kind, key = plant(fault, root, spec)
    before_files, before_rows = tree_state(root), rows(root)

    report = verify_cache(root, source=spec, workers=2)
    found = [p for p in report.problems if p.kind == kind]
    assert found, report.summary()
    if key is not None:
        assert any(p.key == key for p in found), report.summary()
    assert not report.ok
    # without --repair nothing changed: same files (same inodes), same rows
    assert tree_state(root) == before_files
    assert rows(root) == before_rows

    repaired = verify_cache(root, source=spec, workers=2, repair=True)
    assert all(p.repaired for p in repaired.problems if p.kind != "missing_entry"), repaired.summary()

    after = verify_cache(root, workers=2)  # integrity, without the source
    assert after.ok, after.summary()
    with_source = verify_cache(root, source=spec, workers=2)
    leftover = {p.kind for p in with_source.problems}
    assert leftover <= {"missing_entry"}, with_source.summary()
    # what repair dropped is what `build` makes again; after that, everything is clean
    with Cache(root, sweep=False) as c:
        for p in with_source.problems:
            c.put_file(p.key, p.path)
        stats = c.stats()
    final = verify_cache(root, source=spec, workers=2)
    assert final.ok and final.complete, final.summary()
    assert stats.entries == len(spec.items()) + (1 if fault == "orphan" else 0)


def test_repair_reindexes_an_orphan_with_its_content(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    kind, key = plant("orphan", root, spec)
    verify_cache(root, repair=True)
    with Cache(root, sweep=False) as c:
        assert c.read(key) == b"sound content nobody indexed"
        assert c.entry(key).checksum is not None  # type: ignore[union-attr]


def test_repair_drops_a_corrupt_entry_instead_of_serving_it(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    kind, key = plant("flipped_byte", root, spec)
    verify_cache(root, repair=True)
    with Cache(root, sweep=False) as c:
        assert c.read(key) is None
        s = c.stats()
    assert s.entries == 9


def test_dead_writer_leftovers_are_reported_then_reclaimed(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    die_mid_write(root, "half/written.bin")
    report = verify_cache(root)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["stale_part", "stale_reservation"], report.summary()
    reservation = next(p for p in report.problems if p.kind == "stale_reservation")
    assert reservation.size_bytes >= 100000 and "dead writer" in reservation.detail
    fixed = verify_cache(root, repair=True)
    assert {p.action for p in fixed.problems} == {"removed", "released"}
    assert list((root / ".cachewatch" / "tmp").iterdir()) == []
    with Cache(root, sweep=False) as c:
        s = c.stats()
    assert s.reserved_bytes == 0 and s.writers == 0


def test_source_data_is_never_touched_by_repair(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    src_before = {str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in spec.dir.rglob("*") if p.is_file()}  # type: ignore[union-attr]
    for i, fault in enumerate(("deleted_file", "flipped_byte")):
        plant(fault, root, spec, victim_index=i)
    verify_cache(root, source=spec, repair=True)
    after = {str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in spec.dir.rglob("*") if p.is_file()}  # type: ignore[union-attr]
    assert after == src_before


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from cachewatch.engine import Cache
    c = Cache(sys.argv[1], max_size="300KB", sweep=False)
    i = 0
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(sys.argv[2]):
        c.put(f"churn/{i % 40}", os.urandom(7000 + (i % 13) * 1000))
        if i == 20:
            print("started", flush=True)
        if i % 3 == 0:
            c.read(f"churn/{(i * 7) % 40}")
        i += 1
    print(i)
    """
)


def test_no_false_faults_while_other_processes_write_and_evict(tmp_path: Path) -> None:
    root = tmp_path / "busy"
    Cache(root, max_size="300KB", sweep=False).close()
    stop = tmp_path / "stop"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(stop)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for w in writers:
            assert w.stdout.readline().strip() == "started"  # type: ignore[union-attr]
        reports = []
        until = time.monotonic() + 3.0  # long enough for the writers to wrap around their keys several times
        while len(reports) < 4 or time.monotonic() < until:
            reports.append(verify_cache(root, workers=2))
    finally:
        stop.touch()
        outs = [w.communicate(timeout=60)[0].split()[-1] for w in writers]
    assert all(int(o) > 50 for o in outs)  # the writers really churned (and evicted: 40 keys x ~10 KB > 300 KB)
    for r in reports:
        assert r.ok, r.summary()
    assert sum(r.entries for r in reports) > 0
    assert verify_cache(root).ok


def test_cli_exit_codes_and_json(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    ok = run_cli("verify", str(root), "--source", str(spec.dir), "--glob", "**/*.edf", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["complete"] is True and data["source_items"] == 10
    plant("flipped_byte", root, spec)
    bad = run_cli("verify", str(root), "--json", "-q")
    assert bad.returncode == 1
    data = json.loads(bad.stdout)
    assert data["counts"] == {"checksum_mismatch": 1}
    fixed = run_cli("verify", str(root), "--repair", "-q")
    assert fixed.returncode == 0, fixed.stdout
    assert "[dropped]" in fixed.stdout
    missing = run_cli("verify", str(root / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("cachewatch: cache root") and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_directory_that_is_not_a_cache_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    out = run_cli("verify", str(tmp_path / "plain"))
    assert out.returncode == 2
    assert "not a cachewatch cache" in out.stderr


def test_an_old_version_still_pinned_by_a_reader_is_not_a_fault(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    key = spec.items()[0].key
    with Cache(root, sweep=False) as c:
        with c.pin(key) as old_path:
            c.put(key, b"a newer version")  # the pinned old file stays put; the new one takes another name
            report = verify_cache(root, source=spec)
            assert report.ok, report.summary()
            repaired = verify_cache(root, source=spec, repair=True)
            assert repaired.problems == () and old_path.exists()
        assert c.read(key) == b"a newer version"
    assert verify_cache(root, source=spec).ok


def test_a_row_naming_a_file_outside_the_cache_is_dropped_and_the_file_never_touched(setup: tuple[Path, SourceSpec], tmp_path: Path) -> None:
    root, spec = setup
    outside = tmp_path / "precious.txt"
    outside.write_text("not the cache's")
    with Cache(root, sweep=False) as c:
        row = c.entries(order="key")[0]
    with sqlite3.connect(root / ".cachewatch" / "index.sqlite", timeout=30) as db:  # a hand-edited (or hostile) index
        db.execute("UPDATE entries SET name = ? WHERE key = ?", ("../../precious.txt", row.key))
    report = verify_cache(root)
    assert sorted(p.kind for p in report.problems) == ["bad_row", "orphan_file"]  # its real file lost its row
    fixed = verify_cache(root, repair=True)
    assert {p.kind: p.action for p in fixed.problems} == {"bad_row": "row removed", "orphan_file": "re-indexed"}
    assert outside.read_text() == "not the cache's"
    assert verify_cache(root).ok


def test_a_lost_index_is_rebuilt_from_the_files_by_repair(setup: tuple[Path, SourceSpec]) -> None:
    root, spec = setup
    with Cache(root, sweep=False) as c:
        before = {e.key: (e.checksum, e.size_bytes) for e in c.entries(order="key")}
    for p in (root / ".cachewatch").glob("index.sqlite*"):
        p.unlink()
    refused = run_cli("verify", str(root), "--repair")
    assert refused.returncode == 2 and "pass --max-size" in refused.stderr
    out = run_cli("verify", str(root), "--repair", "--max-size", "50MB", "--json", "-q")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"] == {"orphan_file": 10}
    with Cache(root, sweep=False) as c:
        after = {e.key: (e.checksum, e.size_bytes) for e in c.entries(order="key")}
    assert after == before
    assert verify_cache(root, source=spec).ok
