"""A writer's reservation estimate (index counters read outside the mutex, corrected by the
ledger's running totals) follows another process's eviction without reading the index again,
and never counts less than what is on disk, even when that evictor is killed half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cachewatch.engine import Cache

from .consistency import assert_index_matches_files
from .workers import on_disk_bytes

KiB = 1024


def _truth(cache: Cache) -> int:
    """Indexed bytes plus every ledger slot's bytes, read now: what the bound is on."""
    c = cache._index.counters()
    return c.live_bytes + c.replaced_bytes + cache._ledger.totals()[0]


def _evict_in_another_process(root: Path, to: int, crash_at: str | None = None) -> int:
    code = f"from cachewatch.engine import Cache\nc = Cache({str(root)!r}, sweep=False)\nc.evict(to={to})\nc.close()\n"
    env = dict(os.environ)
    if crash_at:
        env["CACHEWATCH_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode


def _filled(root: Path) -> Cache:
    cache = Cache(root, max_size=256 * KiB, target_ratio=1.0, sweep=False)
    for i in range(40):
        cache.put(f"k{i}", b"x" * 4000)  # 40 x 4 KiB charged
    cache.flush()
    cache._refresh_estimate()
    assert cache._estimate() == _truth(cache) == 160 * KiB
    return cache


def test_an_estimate_read_before_another_process_evicts_follows_that_eviction(cache_root: Path) -> None:
    cache = _filled(cache_root)
    try:
        assert _evict_in_another_process(cache_root, 64 * KiB) == 0
        # Without a new read of the index: the evicted bytes are taken off (before, an estimate this
        # old said 160 + 96 KiB: the victims in the counters it read and again as released bytes).
        assert cache._estimate() == _truth(cache) == 64 * KiB
        used_on_disk, _ = on_disk_bytes(cache_root, cache.block_bytes)
        assert used_on_disk <= cache._estimate()
        cache.put("after", b"y" * 4000)  # granted from that estimate: room for it under the target
        assert cache._estimate() == _truth(cache) == 68 * KiB
    finally:
        cache.close()
    assert_index_matches_files(cache_root)


@pytest.mark.parametrize("point", ["evict_after_mark", "evict_mid_reap"])
def test_an_estimate_never_counts_less_than_the_disk_when_the_evictor_dies(cache_root: Path, point: str) -> None:
    cache = _filled(cache_root)
    try:
        assert _evict_in_another_process(cache_root, 64 * KiB, crash_at=point) == -signal.SIGKILL
        # The victims' rows are gone, their files (all, or all but one) still there, counted by the
        # dead evictor's slot: the estimate takes them off the counters it read, and counts them there.
        used_on_disk, _ = on_disk_bytes(cache_root, cache.block_bytes)
        assert used_on_disk > 64 * KiB, "the kill must land with victims' files still on disk"
        assert used_on_disk <= cache._estimate() == _truth(cache)
        with Cache(cache_root, sweep=False):  # recovery: the dead evictor's files go, then its slot
            pass
        used_on_disk, _ = on_disk_bytes(cache_root, cache.block_bytes)
        assert used_on_disk <= cache._estimate()  # an over-count now (its slot freed as "released")
        cache._refresh_estimate()
        assert cache._estimate() == _truth(cache) == 64 * KiB
    finally:
        cache.close()
    assert_index_matches_files(cache_root)
