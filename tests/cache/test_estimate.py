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
from hypothesis import given, settings
from hypothesis import strategies as st

from cachewatch.engine import Cache
from cachewatch.engine.cache.ledger import Ledger

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


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["reserve", "release", "evicting", "unevicting", "unlinked"]), st.integers(0, 3), st.integers(1, 64 * KiB)),
        max_size=60,
    ),
    base=st.integers(-256 * KiB, 256 * KiB),
    limit=st.integers(0, 512 * KiB),
)
def test_the_one_call_reservation_decides_and_counts_as_the_estimate_says(tmp_path_factory, ops, base, limit) -> None:  # noqa: ANN001
    # The per-put critical section is Ledger.reserve_within: one read of the header instead of
    # _estimate()'s three. It must grant exactly when base + totals + released - evicted + n fits,
    # count a grant as reserve() does, and change nothing when it refuses.
    ledger = Ledger(tmp_path_factory.mktemp("ledger") / "ledger", slots=8)
    slots = [ledger.claim(f"t{i}") for i in range(4)]
    for op, who, n in ops:
        slot = slots[who]
        if op == "reserve":
            estimate = base + ledger.totals()[0] + ledger.released_total() - ledger.evicted_total()
            before = (ledger.totals(), ledger.read(slot), ledger.released_total(), ledger.evicted_total())
            granted = ledger.reserve_within(slot, n, base, limit)
            assert granted == (estimate + n <= limit)
            if granted:
                assert ledger.totals() == (before[0][0] + n, before[0][1] + 1)
                mine = ledger.read(slot)
                assert (mine.reserved_bytes, mine.writes) == (before[1].reserved_bytes + n, before[1].writes + 1)
            else:
                assert (ledger.totals(), ledger.read(slot), ledger.released_total(), ledger.evicted_total()) == before
        elif op == "release":
            ledger.release(slot, n)
        elif op == "evicting":
            ledger.count_evicting(slot, n)
        elif op == "unevicting":
            ledger.uncount_evicting(slot, min(n, ledger.read(slot).reserved_bytes))
        else:
            ledger.add_bytes(slot, -n, indexed=False)
        used = ledger.used()
        assert ledger.totals() == (sum(s.reserved_bytes for s in used), sum(s.writes for s in used))
    ledger.close()
