"""kill -9 at any moment: no half entry is ever visible, start-up sweeps the rest, the bound holds."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache

from .consistency import assert_index_matches_files
from .test_faults import _live_rows_have_their_files
from .workers import die_at, on_disk_bytes, torn_entry_checker, value_ok, writer_forever

KiB = 1024
MAX = 2048 * KiB


def test_writers_killed_at_random_moments(tmpfs, tmp_path: Path) -> None:
    root = tmpfs("128MiB") / "cache"
    ctx = mp.get_context("fork")
    parent = Cache(root, max_size=MAX, target_ratio=1.0)
    block = parent.block_bytes
    parent.close()
    stop = tmp_path / "stop"
    checker_out = tmp_path / "checker.txt"
    checker = ctx.Process(target=torn_entry_checker, args=(str(root), str(stop), str(checker_out)))
    checker.start()
    rng = random.Random(7)
    killed = parts_left = 0
    for round_ in range(25):
        writers = [
            ctx.Process(target=writer_forever, args=(str(root), round_ * 10 + i, 64 * KiB, 512 * KiB, 20))
            for i in range(4)
        ]
        for w in writers:
            w.start()
        # Kill while they write: wait until this round has committed something, then a random moment.
        start = _committed(root)
        deadline = time.monotonic() + 30
        while _committed(root) == start and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.05))
        for w in writers:
            os.kill(w.pid, signal.SIGKILL)
        for w in writers:
            w.join()
            assert w.exitcode == -signal.SIGKILL
            killed += 1
        # Nothing writes now: the walk is exact. Dead writers' partial files still count, and
        # still fit, because their reservations were counted before they wrote a byte.
        used, _ = on_disk_bytes(root, block)
        assert used <= MAX, f"round {round_}: {used} bytes on disk > max {MAX}"
        parts_left += len(os.listdir(root / ".cachewatch" / "tmp"))
    stop.touch()
    checker.join(60)
    assert checker.exitcode == 0
    assert checker_out.read_text() == ""
    assert killed == 100
    assert parts_left > 0, "no kill landed mid-write; the test would prove nothing"
    assert_index_matches_files(root, value_check=value_ok)


def _committed(root: Path) -> int:
    """How many entries were committed so far (new rows get increasing ids)."""
    import sqlite3

    with sqlite3.connect(root / ".cachewatch" / "index.sqlite", timeout=30) as db:
        row = db.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()
    return int(row[0])


# Every step of the put path, in order (docs/cache.md, "Crashes"): reserve, write the .part,
# journal record, rename (no index yet), index transaction (before its COMMIT), after the index
# (before the ledger release).
_PUT_STEPS = ["after_reserve", "mid_write", "after_journal", "after_rename", "before_commit", "after_index"]


@pytest.mark.parametrize("point", _PUT_STEPS)
@pytest.mark.parametrize("existing", [False, True])
def test_death_at_each_step_of_a_put(cache_root: Path, point: str, existing: bool) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        cache.put("other", b"survives")
        if existing:
            cache.put("k", b"old")
    proc = mp.get_context("fork").Process(target=die_at, args=(str(cache_root), "k", point))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    leftovers = os.listdir(cache_root / ".cachewatch" / "tmp")
    if point == "mid_write":
        assert leftovers, "the crash must leave a .part behind for this test to mean anything"
    indexed = point == "after_index"
    renamed = point in ("after_rename", "before_commit", "after_index")
    old = b"old" if existing else None
    # Immediately, with no recovery: every LIVE row names its own file, the index holds the old
    # value until the batch's COMMIT, and the dead writer's slot still counts what it left on disk.
    assert _live_rows_have_their_files(cache_root) == []
    with Cache(cache_root, readonly=True) as ro:
        assert ro.read("k") == (b"N" * 10_000 if indexed else old)
        dead = [w for w in ro.writers() if not w.alive]
        assert len(dead) == 1 and dead[0].reserved_bytes == ro.block_bytes * 3  # 10,000 B in 4 KiB blocks
        used_on_disk, _ = on_disk_bytes(cache_root, ro.block_bytes)
        counted = ro.snapshot().counters.used_bytes + sum(w.reserved_bytes for w in ro.writers())
        assert used_on_disk <= counted, f"{used_on_disk} B on disk, only {counted} B counted"
    assert_index_matches_files(cache_root)  # re-opening recovers: journal replayed, slot freed
    with Cache(cache_root) as cache:
        assert cache.read("other") == b"survives"
        # Renamed means journaled: recovery indexes the new value. Before the rename the key keeps
        # its old value (or none). Never a mix, never a row over another file.
        assert cache.read("k") == (b"N" * 10_000 if renamed else old)
        assert cache.stats().reserved_bytes == 0
    assert os.listdir(cache_root / ".cachewatch" / "journal") == [], "a dead writer's journal outlived its replay"


def test_journal_replay_indexes_renamed_entries_of_a_killed_writer(cache_root: Path) -> None:
    """A writer killed with a batch of renamed, journaled, unindexed entries: nothing of it is in the
    index, every file is counted by its ledger slot, and the next open indexes them all."""
    with Cache(cache_root, max_size="64MiB", sweep=False) as cache:  # 20 puts are far from a batch's byte limit
        cache.put("k3", b"old")
    code = (
        "import os, signal\nfrom cachewatch.engine import Cache\n"
        f"c = Cache({str(cache_root)!r}, sweep=False, batch_puts=1000, batch_interval=3600)\n"
        "for i in range(20):\n    c.put(f'k{i}', bytes([65 + i]) * (1000 + i))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert p.returncode == -signal.SIGKILL
    with Cache(cache_root, readonly=True) as ro:
        assert ro.snapshot().counters.entries == 1 and ro.read("k3") == b"old"  # nothing indexed
        (dead,) = [w for w in ro.writers() if not w.alive]
        assert dead.reserved_bytes == 20 * ro.block_bytes and dead.writes == 20
    assert len(_entry_names(cache_root)) == 21  # 20 renamed files + the old k3
    assert assert_index_matches_files(cache_root) == 20  # replayed: k3 replaced, its old file gone
    with Cache(cache_root, sweep=False) as cache:
        for i in range(20):
            assert cache.read(f"k{i}") == bytes([65 + i]) * (1000 + i)


def test_replay_drops_records_whose_file_is_not_there(cache_root: Path) -> None:
    """A journal record whose rename never happened, or whose file was replaced by another, indexes nothing."""
    with Cache(cache_root, max_size="4MiB", sweep=False) as cache:
        cache.put("a", b"A" * 100)
    code = (
        "import os, signal\nfrom cachewatch.engine import Cache\n"
        f"c = Cache({str(cache_root)!r}, sweep=False, batch_puts=1000, batch_interval=3600)\n"
        "c.put('b', b'B' * 100)\nc.put('c', b'C' * 100)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == -signal.SIGKILL
    names = {n.split("/", 1)[1]: n for n in _entry_names(cache_root)}
    os.unlink(cache_root / names["b"])  # gone before recovery
    # Replaced by another file at that name, same bytes, another inode: made before the old one
    # goes, so the filesystem cannot hand the freed inode number straight back.
    other = (cache_root / names["c"]).with_name("replacement.tmp")
    other.write_bytes(b"C" * 100)
    assert other.stat().st_ino != (cache_root / names["c"]).stat().st_ino
    os.replace(other, cache_root / names["c"])
    with Cache(cache_root, sweep=False) as cache:  # recovery: the journal is replayed
        assert cache.read("b") is None and cache.read("c") is None and cache.read("a") == b"A" * 100
        assert (cache_root / names["c"]).read_bytes() == b"C" * 100  # not the journal's file: not recovery's to remove
        assert cache.sweep_orphans() == (1, 100)  # an orphan like any hand-made file
    assert assert_index_matches_files(cache_root) == 1


def _entry_names(root: Path) -> list[str]:
    return [f"{d.name}/{f.name}" for d in root.iterdir() if d.name != ".cachewatch" for f in d.iterdir()]


@pytest.mark.parametrize("point", ["evict_after_mark", "evict_mid_reap"])
def test_death_in_an_eviction_a_put_started(cache_root: Path, point: str) -> None:
    """A put that has to evict first, killed after the victims' rows left the index and before
    (or while) their files are unlinked: every LIVE row keeps its file, the files without rows
    are counted by the dead evictor's ledger slot, and an open unlinks them (journal E records)."""
    with Cache(cache_root, max_size=64 * KiB, target_ratio=1.0, sweep=False) as cache:
        for i in range(15):
            cache.put(f"k{i}", b"x" * 4000)  # 15 x 4 KiB of 16: the next put evicts
    code = f"from cachewatch.engine import Cache\nc = Cache({str(cache_root)!r}, sweep=False)\nc.put('new', b'n' * 8000)\n"
    env = dict(os.environ, CACHEWATCH_CRASH_AT=point)
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == -signal.SIGKILL
    assert _live_rows_have_their_files(cache_root) == []
    with Cache(cache_root, readonly=True) as ro:
        snap = ro.snapshot()
        rowless = set(_entry_names(cache_root)) - {r.name for r in snap.live}
        assert rowless, "the kill must land after the victims left the index, with files still there"
        (dead,) = [w for w in ro.writers() if not w.alive]
        assert dead.reserved_bytes >= len(rowless) * ro.block_bytes  # still counted
        used_on_disk, _ = on_disk_bytes(cache_root, ro.block_bytes)
        assert used_on_disk <= snap.counters.used_bytes + dead.reserved_bytes <= 64 * KiB
    assert_index_matches_files(cache_root)
