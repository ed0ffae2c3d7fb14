"""The pieces the engine composes, as small protocols, and the one place they are chosen.

The engine does not parse tqdm bars or talk to NVML itself: ``engine/training`` (progress
feed, ETA, OOM and exit diagnosis) and ``engine/monitor`` (GPU, process tree, host) do.
The engine needs only what the protocols below say, and :func:`default_parts` picks the
implementations this build has; a part that is missing leaves its snapshot field empty
("no GPU", no progress), never an error.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from ..monitor.monitor import MonitorSnapshot
from ..training.oom import CudaOomAlert, HostOomAlert
from ..training.progress import ProgressSnapshot
from ..training.records import ReportRecord
from .codec import frozen_map

__all__ = [
    "MonitorLike",
    "ProgressFeedLike",
    "JobFactory",
    "EngineParts",
    "PeriodicSampler",
    "NoProgress",
    "default_parts",
]

log = logging.getLogger(__name__)


class MonitorLike(Protocol):
    """``engine.monitor.Monitor``: samplers in their own threads; ``snapshot()`` never blocks."""

    def start(self) -> Any: ...

    def stop(self, timeout: float = ...) -> None: ...

    def set_root_pid(self, pid: int | None) -> None: ...

    def snapshot(self) -> MonitorSnapshot:
        """``host``, ``tree`` and ``gpu``, each None before its first sample."""


class ProgressFeedLike(Protocol):
    """``engine.training.feed.ProgressFeed``: one per attempt of the training."""

    last_cuda_oom: CudaOomAlert | None

    def feed_output(self, chunk: bytes | str, time_s: float | None = None) -> list[CudaOomAlert | HostOomAlert]:
        """Output as it arrives; returns the OOMs it completes."""

    def poll(self, time_s: float | None = None) -> list[ReportRecord]:
        """New records of the progress file (``event`` and ``checkpoint`` go to the event log)."""

    def finish(self, time_s: float | None = None, outcome: str = "exited") -> list[CudaOomAlert | HostOomAlert]:
        """The attempt exited (``finished``, ``stopped``, ``failed``); returns OOMs completed by the end of the output."""

    def pause(self, time_s: float | None = None) -> None: ...

    def resume(self, time_s: float | None = None) -> None: ...

    def snapshot(self, now: float | None = None) -> ProgressSnapshot | None: ...


# (progress file, attempt start time) -> a feed for that attempt
FeedFactory = Callable[[Any, float], ProgressFeedLike]
# classify_exit(returncode=..., cuda_oom=..., stopped_by_user=...) -> object with category, summary, hints
ExitClassifier = Callable[..., Any]


# (engine, args, context) -> result mapping; runs in its own thread with the runner's
# cachewatch.engine.jobs.base.JobContext (see daemon/jobrunner.py)
JobFactory = Callable[[Any, Mapping[str, Any], Any], Mapping[str, Any]]


@dataclass
class EngineParts:
    monitor: MonitorLike | None = None
    new_feed: FeedFactory | None = None
    classify_exit: ExitClassifier | None = None
    # [[watch]] config -> a watched directory (start/stop/stats()/evict(to)/events/root)
    new_watch: Callable[[Any], Any] | None = None
    jobs: dict[str, JobFactory] = field(default_factory=dict)  # "verify" | "build" | "split"


class NoProgress:
    """The progress feed when none is built in: progress stays unknown."""

    last_cuda_oom: CudaOomAlert | None = None

    def feed_output(self, chunk: bytes | str, time_s: float | None = None) -> list[CudaOomAlert | HostOomAlert]:
        return []

    def poll(self, time_s: float | None = None) -> list[ReportRecord]:
        return []

    def finish(self, time_s: float | None = None, outcome: str = "exited") -> list[CudaOomAlert | HostOomAlert]:
        return []

    def pause(self, time_s: float | None = None) -> None:
        pass

    def resume(self, time_s: float | None = None) -> None:
        pass

    def snapshot(self, now: float | None = None) -> ProgressSnapshot | None:
        return None


class PeriodicSampler:
    """Call ``fn`` every ``interval_s`` in a daemon thread; :meth:`poke` samples at once."""

    def __init__(self, fn: Callable[[], Any], interval_s: float, *, name: str, on_sample: Callable[[], None] | None = None) -> None:
        self._fn = fn
        self.interval_s = interval_s
        self._name = name
        self._on_sample = on_sample
        self._latest: Any = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poke(self) -> None:
        self._wake.set()

    def latest(self) -> Any:
        return self._latest

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._latest = self._fn()
            except Exception:  # a sampler must outlive one bad reading
                log.exception("%s failed", self._name)
            if self._on_sample is not None:
                self._on_sample()
            self._wake.wait(self.interval_s)
            self._wake.clear()


def default_parts(config: Any) -> EngineParts:
    """The implementations this build has: the one composition point for the other packages."""
    parts = EngineParts()
    from ..monitor import Monitor
    from ..training.feed import ProgressFeed
    from ..training.oom import classify_exit
    from ..watch.watcher import WatchedDirectory

    parts.monitor = Monitor.from_config(config)
    parts.new_feed = lambda path, started: ProgressFeed(path, started_time=started)
    parts.classify_exit = classify_exit
    parts.new_watch = WatchedDirectory.from_config
    from ..jobs.daemon_adapter import job_factories

    parts.jobs.update(job_factories())
    return parts
