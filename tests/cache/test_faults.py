"""Issue 9, items 2, 3 and 6: a lost index, one max per root, kill -9 in evict and overwrite.

Real processes, real files, real kill -9. Crash points are reached by the real code path:
a process started with CACHEWATCH_CRASH_AT=<point> SIGKILLs itself at that step.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache
from cachewatch.engine.errors import CacheRootError

from tests.support.helpers import run_cli, wait_for
from .consistency import assert_index_matches_files

KiB = 1024


def _fill(root: Path, n: int, size: int = 2000, max_size: int = 4 << 20) -> None:
    with Cache(root, max_size=max_size, sweep=False) as cache:
        for i in range(n):
            cache.put(f"k{i}", (b"%06d" % i) * (size // 6))


def _entry_files(root: Path) -> dict[str, int]:
    out = {}
    for shard in root.iterdir():
        if shard.name == ".cachewatch" or not shard.is_dir():
            continue
        for f in shard.iterdir():
            try:
                out[f"{shard.name}/{f.name}"] = f.stat().st_ino
            except FileNotFoundError:
                continue  # going while we look (an eviction under way)
    return out


def _count_files(root: Path) -> int:
    return sum(len(os.listdir(d)) for d in os.scandir(root) if d.name != ".cachewatch" and d.is_dir())


def _live_rows_have_their_files(root: Path) -> list[str]:
    """Read the index raw (no Cache, so no recovery): every LIVE row's file, with its inode and size."""
    bad = []
    with sqlite3.connect(root / ".cachewatch" / "index.sqlite", timeout=30) as db:
        rows = db.execute("SELECT key, name, size, ino FROM entries WHERE state = 0").fetchall()
    for key, name, size, ino in rows:
        try:
            st = os.stat(root / name)
        except FileNotFoundError:
            bad.append(f"{key}: row without file")
            continue
        if st.st_ino != ino or st.st_size != size:
            bad.append(f"{key}: file is inode {st.st_ino} of {st.st_size} B, row says inode {ino} of {size} B")
    return bad


def _child(code: str, crash_at: str | None = None, **env: str) -> subprocess.Popen:
    full = dict(os.environ)
    full.pop("CACHEWATCH_CRASH_AT", None)
    if crash_at:
        full["CACHEWATCH_CRASH_AT"] = crash_at
    full.update(env)
    return subprocess.Popen([sys.executable, "-c", code], env=full)


# ------------------------------------------------------------------ item 2: a lost index
@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_lost_index_over_entry_files_is_refused_and_nothing_is_deleted(cache_root: Path, damage: str) -> None:
    _fill(cache_root, 30)
    before = _entry_files(cache_root)
    db = cache_root / ".cachewatch" / "index.sqlite"
    if damage == "truncate":
        os.truncate(db, 0)  # `truncate -s0 index.sqlite`
    elif damage == "delete":
        db.unlink()
    else:
        db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheRootError, match=r"cachewatch verify .* --repair"):
        Cache(cache_root, max_size="4MiB")
    with pytest.raises(CacheRootError, match=r"--repair"):
        Cache(cache_root)
    for cmd in (["cache", "stats"], ["cache", "ls"], ["verify"]):
        r = run_cli(*cmd, str(cache_root))
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "--repair" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    time.sleep(0.2)  # a background sweep, had one started, would be deleting now
    assert _entry_files(cache_root) == before
    if damage == "truncate":
        assert db.stat().st_size == 0, "the refused open wrote a schema into the empty index"
    # The command it names does rebuild: every entry is back, with its value.
    r = run_cli("verify", str(cache_root), "--repair", "--max-size", "4MiB")
    assert r.returncode == 0, r.stdout + r.stderr
    with Cache(cache_root, sweep=False) as cache:
        assert len(cache) == 30
        assert cache.read("k7") == b"000007" * (2000 // 6)
    assert assert_index_matches_files(cache_root) == 30


def test_a_sweep_never_deletes_files_older_than_its_index(cache_root: Path) -> None:
    _fill(cache_root, 10)
    before = _entry_files(cache_root)
    (cache_root / ".cachewatch" / "index.sqlite").unlink()
    # A repair tool's fresh index over the files: they are not in it yet, and the sweep must not touch them.
    with Cache(cache_root, max_size="4MiB", new_index_over_files=True) as cache:
        assert cache._sweeper is None
        assert cache.sweep_orphans() == (0, 0)
    assert _entry_files(cache_root) == before


# ------------------------------------------------------------------ item 3: one max per root
def test_a_second_max_size_adopts_the_stored_one_with_a_warning(cache_root: Path, caplog) -> None:
    with Cache(cache_root, max_size="1MiB", sweep=False) as a:
        with Cache(cache_root, max_size="256KiB", sweep=False) as b:
            assert b.max_bytes == a.max_bytes == 1 << 20
            assert b.target_bytes == a.target_bytes
            assert b.limits_note and "256" in b.limits_note and "cachewatch cache resize" in b.limits_note
            for i in range(40):
                b.put(f"k{i}", b"x" * 16 * KiB)  # 640 KiB: over the asked 256 KiB, under the stored max
            assert len(b) == 40
    assert "keeps its stored limits" in caplog.text
    with Cache(cache_root, max_size="256KiB", resize=True, sweep=False) as c:
        assert c.max_bytes == 256 * KiB and c.stats().used_bytes <= 256 * KiB


def test_inspection_commands_never_delete_anything(cache_root: Path, tmp_path: Path) -> None:
    _fill(cache_root, 40, size=16 * KiB, max_size=1 << 20)
    # A dead writer's .part and reservation, which a writing open would reclaim.
    p = _child(f"from cachewatch.engine import Cache\nCache({str(cache_root)!r}).put('dead', b'd' * 50000)", "put_mid_write")
    assert p.wait(60) == -signal.SIGKILL
    parts = os.listdir(cache_root / ".cachewatch" / "tmp")
    assert parts
    cfg = tmp_path / "cachewatch.toml"
    cfg.write_text(f'[cache]\nroot = "{cache_root}"\nmax_size = "256KiB"\n')  # another max than the stored 1 MiB
    before = _entry_files(cache_root)
    with sqlite3.connect(cache_root / ".cachewatch" / "index.sqlite") as db:
        rows_before = db.execute("SELECT id, key, accessed FROM entries ORDER BY id").fetchall()
    for cmd in (["cache", "stats"], ["cache", "ls"], ["cache", "log"], ["verify"]):
        r = run_cli("--config", str(cfg), *cmd, str(cache_root))
        assert r.returncode in (0, 1), (cmd, r.stdout, r.stderr)
    r = run_cli("--config", str(cfg), "cache", "stats", "--json")
    assert r.returncode == 0 and "stored max" in r.stderr, r.stderr
    assert _entry_files(cache_root) == before
    assert os.listdir(cache_root / ".cachewatch" / "tmp") == parts
    with sqlite3.connect(cache_root / ".cachewatch" / "index.sqlite") as db:
        assert db.execute("SELECT id, key, accessed FROM entries ORDER BY id").fetchall() == rows_before
    with Cache(cache_root, readonly=True) as ro:
        assert ro.read("k3") is not None
        with pytest.raises(Exception, match="read-only"):
            ro.put("x", b"1")
        with pytest.raises(Exception, match="read-only"):
            ro.evict(to=0)


# ------------------------------------------------------------------ item 6: kill -9 in evict and overwrite
@pytest.mark.parametrize("point", ["evict_after_mark", "evict_mid_reap", None])
def test_kill_during_cache_evict_leaves_every_row_with_its_file(cache_root: Path, point: str | None) -> None:
    n = 4000
    _fill(cache_root, n, size=200, max_size=64 << 20)
    assert _count_files(cache_root) == n
    env = dict(os.environ)
    env.pop("CACHEWATCH_CRASH_AT", None)
    if point:
        env["CACHEWATCH_CRASH_AT"] = point
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachewatch.tui.cli", "cache", "evict", str(cache_root), "--to", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if point is None:  # a random moment while files are going
        wait_for(lambda: _count_files(cache_root) < n - 20 or proc.poll() is not None, interval=0.001, what="eviction under way")
        proc.kill()
        assert proc.wait(60) == -signal.SIGKILL, "the eviction ended before the kill; the test would prove nothing"
    rc = proc.wait(60)
    if point is not None:
        assert rc == -signal.SIGKILL
    # Immediately, before any process opens the cache: no LIVE row lost its file.
    assert _live_rows_have_their_files(cache_root) == []
    assert_index_matches_files(cache_root)  # and after an open, rows == files exactly


@pytest.mark.parametrize("point", ["put_after_journal", "put_after_rename", "put_before_commit", "put_after_index"])
def test_kill_at_each_step_of_an_overwrite(cache_root: Path, point: str) -> None:
    with Cache(cache_root, max_size="1MiB", sweep=False) as cache:
        cache.put("k", b"old" * 1000)
    code = f"from cachewatch.engine import Cache\nc = Cache({str(cache_root)!r}, sweep=False)\nc.put('k', b'NEW' * 5)\nc.flush()"
    p = _child(code, point)
    assert p.wait(60) == -signal.SIGKILL
    assert _live_rows_have_their_files(cache_root) == []
    with Cache(cache_root, readonly=True) as ro:  # no recovery has run: the index as the kill left it
        got = ro.read("k")
        assert got == (b"old" * 1000 if point != "put_after_index" else b"NEW" * 5)
    assert_index_matches_files(cache_root)
    with Cache(cache_root, sweep=False) as cache:
        # Once renamed (journaled before), the new value is the put's outcome: recovery indexes it.
        renamed = point != "put_after_journal"
        assert cache.read("k") == (b"NEW" * 5 if renamed else b"old" * 1000)


def test_kill_during_overwrites_at_random_moments(cache_root: Path) -> None:
    with Cache(cache_root, max_size="4MiB", sweep=False) as cache:
        cache.put("k", b"0" * 100)
    code = (
        "import random\nfrom cachewatch.engine import Cache\n"
        f"c = Cache({str(cache_root)!r}, sweep=False)\n"
        "i = 0\nwhile True:\n    i += 1\n    n = random.randint(1, 40000)\n    c.put('k', bytes([48 + i % 10]) * n)\n"
    )
    rng = random.Random(3)
    for trial in range(20):
        p = _child(code)
        time.sleep(0.15 + rng.uniform(0, 0.05))
        p.kill()
        assert p.wait(30) == -signal.SIGKILL
        assert _live_rows_have_their_files(cache_root) == [], f"trial {trial}"
        with Cache(cache_root, readonly=True) as ro:
            data = ro.read("k")
            assert data is not None and len(set(data)) == 1, f"trial {trial}: not one complete value"
    assert_index_matches_files(cache_root)
