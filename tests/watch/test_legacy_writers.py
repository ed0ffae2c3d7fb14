"""Seed 000 from outside: several worker processes, each with its own counter, evicting after writing.

Without cachewatch they hold up to (workers x max) between them. With a watch on the
directory, the real size (measured by walking the tree, not by asking cachewatch)
stays at or under max plus what the writers write in one second, and the eviction
log shows the evictions.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from cachewatch.engine.watch import WatchedDirectory

from .conftest import tree_bytes

WRITER = str(Path(__file__).with_name("legacy_writer.py"))
WORKERS = 4
FILES = 120
FILE_BYTES = 16_000
RATE = 25.0  # files per second per worker: 1.6 MB/s together
MAX = 3_000_000


def test_legacy_writers_are_kept_under_max(root: Path, state: Path, tmp_path: Path) -> None:
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), tree_bytes(root)[0]))
            time.sleep(0.02)

    logs = [tmp_path / f"w{i}.log" for i in range(WORKERS)]
    with WatchedDirectory(root, MAX, target_ratio=0.9, min_age=0.3, state_dir=state, scan_workers=0) as w:
        sampler = threading.Thread(target=sample)
        sampler.start()
        procs = [
            subprocess.Popen([sys.executable, WRITER, str(root), str(MAX), str(i), str(FILES), str(FILE_BYTES), str(RATE), str(logs[i])])
            for i in range(WORKERS)
        ]
        try:
            for p in procs:
                assert p.wait(timeout=120) == 0
        finally:
            for p in procs:
                p.kill()
            stop.set()
            sampler.join()
    # Read after the watch has stopped: an eviction still running when the writers end would
    # otherwise land in the log but not in figures taken a moment earlier.
    stats = w.stats()

    writes: list[float] = []
    own_counters = 0
    for log in logs:
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        assert lines[-1]["done"]
        own_counters += lines[-1]["own_counter"]
        writes.extend(x["t"] for x in lines[:-1])
    writes.sort()

    # The writers' own counters say they kept this much: far over max (the bug of seed 000).
    one_second = WORKERS * RATE * FILE_BYTES
    assert own_counters > MAX + one_second

    # The real size: never over max plus the bytes written in the second before, plus one file
    # in flight per writer (a sample can catch a file half written).
    worst = 0.0
    for t, size in samples:
        recent = (bisect.bisect_right(writes, t) - bisect.bisect_right(writes, t - 1.0)) * FILE_BYTES
        allowance = recent + WORKERS * FILE_BYTES
        worst = max(worst, size - MAX - allowance)
    peak = max(s for _, s in samples)
    assert worst <= 0, f"real size went {worst:.0f} bytes past max + 1 s of writes (peak {peak})"
    assert peak > MAX * 0.8  # the test did push the cache up to its limit

    # The eviction log shows cachewatch doing it.
    log = w.eviction_log(newest_first=False)
    assert log and stats.evicted_files == sum(r.files for r in log) > 0
    for r in log:
        assert r.reason in ("max", "startup")
        assert r.size_before > MAX and r.size_after < r.size_before
    gone = [root / k for r in log for k in r.keys]
    assert gone and not any(p.exists() for p in gone)
