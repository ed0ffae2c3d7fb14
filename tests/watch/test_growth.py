"""Growth rate, time to max and to a full disk, and the alerts they raise."""

from __future__ import annotations

from cachewatch.engine.watch.growth import GrowthTracker, alerts_for

MB = 1_000_000


def test_growth_rate_time_to_max_and_disk_full() -> None:
    g = GrowthTracker(window_s=60)
    for t in range(0, 31):
        g.add(1000.0 + t, 10 * MB + t * MB, 0)  # 1 MB/s
    est = g.estimate(40 * MB, 100 * MB, disk_free_bytes=30 * MB, enforcing=True)
    assert abs(est.growth_bytes_per_min - 60 * MB) < 1
    assert abs(est.time_to_max_s - 60.0) < 1e-6
    # 30 MB free but 60 MB left before max: the disk fills first, even with enforcement
    assert abs(est.time_to_disk_full_s - 30.0) < 1e-6
    # plenty of disk: enforcement caps the cache at max, so the disk never fills at this rate
    assert g.estimate(40 * MB, 100 * MB, 10_000 * MB, enforcing=True).time_to_disk_full_s is None
    # dry run does not cap anything
    assert abs(g.estimate(40 * MB, 100 * MB, 10_000 * MB, enforcing=False).time_to_disk_full_s - 10_000) < 1e-6


def test_write_rate_counts_what_was_evicted() -> None:
    g = GrowthTracker(window_s=60)
    # size flat at 90 MB because eviction removes 2 MB/s as fast as it is written
    for t in range(0, 21):
        g.add(float(t), 90 * MB, 2 * MB * t)
    est = g.estimate(90 * MB, 100 * MB, 10**12, enforcing=True)
    assert abs(est.growth_bytes_per_min) < 1
    assert abs(est.write_bytes_per_min - 120 * MB) < 1
    assert est.time_to_max_s is None


def test_old_samples_leave_the_window_and_short_spans_give_no_rate() -> None:
    g = GrowthTracker(window_s=10)
    for t in range(0, 100):
        g.add(float(t), t * MB if t < 80 else 80 * MB, 0)
    assert abs(g.estimate(80 * MB, 10**12, None, True).growth_bytes_per_min) < 1  # only the flat part is left
    h = GrowthTracker(window_s=60)
    h.add(0.0, 0, 0)
    h.add(1.0, MB, 0)
    assert h.estimate(MB, 10 * MB, None, True).growth_bytes_per_min is None


def test_alerts() -> None:
    g = GrowthTracker(window_s=60)
    for t in range(0, 11):
        g.add(float(t), t * MB, 0)
    est = g.estimate(10 * MB, 20 * MB, 15 * MB, enforcing=False)
    kinds = {a.kind for a in alerts_for(size_bytes=10 * MB, max_bytes=20 * MB, dry_run=True, growth=est, horizon_s=3600,
                                          blocked_files=0, events_ok=True, root_ok=True)}
    assert kinds == {"max_soon", "disk_full_soon"}
    over = alerts_for(size_bytes=30 * MB, max_bytes=20 * MB, dry_run=False, growth=est, horizon_s=3600,
                      blocked_files=3, events_ok=False, root_ok=True)
    assert {a.kind for a in over} == {"eviction_blocked", "events_lost", "disk_full_soon"}
    assert not alerts_for(size_bytes=1, max_bytes=20 * MB, dry_run=False, growth=g.estimate(1, 10**15, None, True),
                          horizon_s=60, blocked_files=0, events_ok=False, root_ok=True, watching=False)
