"""A background thread that takes a sample every ``interval_s`` and publishes immutable snapshots.

Readers never wait on a sample in progress: :meth:`BackgroundSampler.latest` returns the
last published snapshot (a frozen dataclass), so a UI thread or a socket handler can read
it at any moment. The next sample is scheduled from the start of the previous one and
missed ticks are dropped, never queued: a slow sample (an NVML call stuck for seconds on
a failing GPU) delays the next one instead of piling up a burst behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

from .errors import MonitorError

__all__ = ["BackgroundSampler", "DEFAULT_HISTORY_LEN"]

S = TypeVar("S")
LOG = logging.getLogger("cachewatch.monitor")

# Two minutes at the default 1 s interval: enough for a sparkline, a few hundred KiB at most.
DEFAULT_HISTORY_LEN = 120


def check_interval(interval_s: float) -> float:
    try:
        value = float(interval_s)
    except (TypeError, ValueError):
        raise MonitorError(f"interval {interval_s!r} is not a number of seconds; use e.g. 1.0") from None
    if not value > 0 or value == float("inf"):
        raise MonitorError(f"interval {interval_s!r} must be a positive number of seconds; use e.g. 1.0")
    return value


class BackgroundSampler(Generic[S]):
    """Base of the samplers: subclasses implement :meth:`_take` (one sample) and may override :meth:`_close`.

    :meth:`sample` takes one sample on the calling thread and publishes it (the daemon may
    drive a sampler itself); :meth:`start` runs the same on a daemon thread every
    ``interval_s`` until :meth:`stop`.
    """

    thread_name = "cachewatch-sampler"

    def __init__(self, *, interval_s: float = 1.0, history_len: int = DEFAULT_HISTORY_LEN) -> None:
        self.interval_s = check_interval(interval_s)
        if not isinstance(history_len, int) or isinstance(history_len, bool) or history_len < 1:
            raise MonitorError(f"history_len {history_len!r} must be a whole number of samples, at least 1")
        self._history: deque[S] = deque(maxlen=history_len)
        self._latest: S | None = None
        self._publish_lock = threading.Lock()
        self._sample_lock = threading.Lock()  # one sample at a time, whoever calls
        self._listeners: list[Callable[[S], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.last_error: str | None = None

    # --- subclass hooks -------------------------------------------------------------------------

    def _take(self) -> S:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        """Release what sampling holds (NVML); called once, after the thread has stopped."""

    # --- sampling -------------------------------------------------------------------------------

    def sample(self) -> S:
        """Take one sample now, publish it, and return it."""
        with self._sample_lock:
            if self._closed:
                raise MonitorError(f"{self.thread_name} was stopped; create a new sampler to sample again")
            snapshot = self._take()
        self._publish(snapshot)
        return snapshot

    def _publish(self, snapshot: S) -> None:
        with self._publish_lock:
            self._latest = snapshot
            self._history.append(snapshot)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(snapshot)
            except Exception:  # a broken listener must not stop sampling for the others
                LOG.exception("%s: a snapshot listener failed", self.thread_name)

    def latest(self) -> S | None:
        """The last published snapshot, or None before the first sample."""
        return self._latest

    def history(self, n: int | None = None) -> tuple[S, ...]:
        """The last ``n`` snapshots (all kept ones by default), oldest first."""
        with self._publish_lock:
            items = tuple(self._history)
        return items if n is None else items[max(0, len(items) - n):]

    def subscribe(self, listener: Callable[[S], None]) -> Callable[[], None]:
        """Call ``listener(snapshot)`` on the sampling thread after each sample; returns an unsubscribe function.

        Listeners must be quick (hand the snapshot to a queue or a loop); a slow one delays the next sample.
        """
        with self._publish_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._publish_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # --- the thread -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "BackgroundSampler[S]":
        """Start sampling every ``interval_s`` on a daemon thread (the first sample is taken at once)."""
        if self._closed:
            raise MonitorError(f"{self.thread_name} was stopped; create a new sampler to sample again")
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
                self.last_error = None
            except Exception as exc:  # a bug in one sample must not end monitoring; keep the last good snapshot
                self.last_error = f"{type(exc).__name__}: {exc}"
                LOG.exception("%s: sample failed", self.thread_name)
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # fell behind: drop the missed ticks
                next_at = now + self.interval_s
            self._stop.wait(next_at - now)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (waiting up to ``timeout`` for a sample in progress) and release resources.

        Idempotent. After ``stop`` the last snapshot and the history stay readable.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                # A sample is stuck in a call (NVML on a dying GPU); releasing now could free state under it.
                LOG.warning("%s: still inside a sample after %.1fs; not releasing its resources", self.thread_name, timeout)
                return
        self._thread = None
        if not self._closed:
            self._closed = True
            with self._sample_lock:
                self._close()

    def __enter__(self) -> "BackgroundSampler[S]":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
