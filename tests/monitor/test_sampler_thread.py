"""The background thread every sampler shares: schedule, history, listeners, failures, stop."""

from __future__ import annotations

import threading

import pytest

from cachewatch.engine.monitor import BackgroundSampler, HostSampler, MonitorError

from tests.support.helpers import wait_for


class Counting(BackgroundSampler[int]):
    """A real subclass: counts its samples, can be told to fail."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.n = 0
        self.fail_at: set[int] = set()
        self.closed = 0

    def _take(self) -> int:
        self.n += 1
        if self.n in self.fail_at:
            raise RuntimeError(f"sample {self.n} broke")
        return self.n

    def _close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("bad", [0, -1, "fast", float("inf"), float("nan"), None])
def test_bad_interval_is_a_clear_error(bad) -> None:
    with pytest.raises(MonitorError, match="interval"):
        Counting(interval_s=bad)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_history_len(bad) -> None:
    with pytest.raises(MonitorError, match="history_len"):
        Counting(history_len=bad)


def test_a_failing_sample_keeps_the_thread_and_the_last_good_snapshot() -> None:
    s = Counting(interval_s=0.01)
    s.fail_at = {3}
    s.start()
    try:
        wait_for(lambda: s.n >= 6, what="6 samples")
    finally:
        s.stop()
    assert 3 not in s.history()
    assert s.history()[:2] == (1, 2)
    assert s.last_error is None  # later samples succeeded again


def test_a_failing_listener_does_not_stop_the_others() -> None:
    s = Counting(interval_s=0.01)
    got: list[int] = []

    def broken(_: int) -> None:
        raise ValueError("listener bug")

    s.subscribe(broken)
    unsubscribe = s.subscribe(got.append)
    s.start()
    try:
        wait_for(lambda: len(got) >= 3, what="3 deliveries")
        unsubscribe()
        n = len(got)
        wait_for(lambda: s.n >= n + 3, what="3 more samples")
    finally:
        s.stop()
    assert len(got) in (n, n + 1)  # at most one delivery was already under way


def test_stop_is_idempotent_closes_once_and_the_thread_is_gone() -> None:
    s = Counting(interval_s=0.01)
    s.start()
    s.start()  # a second start does not add a thread
    wait_for(lambda: s.n >= 2, what="2 samples")
    names = [t.name for t in threading.enumerate()]
    assert names.count(s.thread_name) == 1
    s.stop()
    s.stop()
    assert s.closed == 1 and not s.running
    assert s.thread_name not in [t.name for t in threading.enumerate()]
    with pytest.raises(MonitorError, match="create a new sampler"):
        s.start()


def test_long_interval_stops_promptly() -> None:
    # stop() must not wait out the interval: the thread sleeps on an event.
    s = HostSampler(interval_s=3600)
    s.start()
    wait_for(lambda: s.latest() is not None, what="the first sample")
    s.stop(timeout=10)
    assert not s.running


def test_context_manager() -> None:
    with Counting(interval_s=0.01) as s:
        wait_for(lambda: s.latest() is not None, what="a sample")
    assert not s.running and s.closed == 1
