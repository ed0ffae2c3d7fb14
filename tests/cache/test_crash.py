"""kill -9 at any moment: no half entry is ever visible, start-up sweeps the rest, the bound holds."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache

from .consistency import assert_index_matches_files
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


@pytest.mark.parametrize("point", ["after_reserve", "mid_write", "after_rename", "before_commit", "after_commit"])
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
    committed = point == "after_commit"
    with Cache(cache_root, readonly=True) as ro:  # before any recovery: the committed state only
        assert ro.read("k") == (b"N" * 10_000 if committed else (b"old" if existing else None))
    assert_index_matches_files(cache_root)  # re-opening recovers
    with Cache(cache_root) as cache:
        assert cache.read("other") == b"survives"
        got = cache.read("k")
        # The new file never goes over a committed row's name: an interrupted put leaves the key
        # with its old value (or none); a committed one with the new value. Never a mix.
        assert got == (b"N" * 10_000 if committed else (b"old" if existing else None))
        assert cache.stats().reserved_bytes == 0
