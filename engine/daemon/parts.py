"""The pieces the engine composes, as small protocols, and where they are chosen.

The engine does not parse tqdm bars or talk to NVML itself: ``engine/training`` (progress,
ETA, OOM) and ``engine/monitor`` (GPU, process tree, host) do. The engine needs only what
is written here, and :func:`default_parts` is the one place that picks implementations.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from .codec import frozen_map
from .snapshot import GpuView, HostView, ProgressView, WorkersView

__all__ = [
    "Finding",
    "Sampler",
    "ProcessSampler",
    "ProgressTracker",
    "ExitClassifier",
    "JobFactory",
    "JobContext",
    "EngineParts",
    "PeriodicSampler",
    "NoGpu",
    "NoProgress",
    "default_parts",
]


@dataclass(frozen=True)
class Finding:
    """Something seen in the training's output or exit that deserves an alert."""

    kind: str  # "cuda_oom", "host_oom_kill", ...
    severity: str
    title: str
    text: str = ""
    remedies: tuple[str, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=frozen_map)
    key: str | None = None  # alerts with the same key are one alert raised again


@runtime_checkable
class Sampler(Protocol):
    """Samples in its own thread; :meth:`latest` returns the last immutable reading at once."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def latest(self) -> Any: ...


@runtime_checkable
class ProcessSampler(Sampler, Protocol):
    def watch(self, pid: int | None) -> None:
        """Sample the tree under ``pid`` from now on (``None``: nothing runs)."""


class ProgressTracker(Protocol):
    def reset(self, now: float) -> None:
        """A new attempt started: forget the previous one's steps (not its epoch times)."""

    def feed_output(self, text: str, now: float) -> Sequence[Finding]:
        """Training output as it arrives (chunks, not lines; ``\\r`` kept)."""

    def feed_report(self, line: str, now: float) -> Sequence[Finding]:
        """One JSON line from the reporting API's file."""

    def view(self, now: float) -> ProgressView | None: ...


# (exit_code, signal name, requested by us) -> an alert, e.g. probable host OOM kill
ExitClassifier = Callable[[int | None, "str | None", bool], "Finding | None"]


class JobContext(Protocol):
    """What a maintenance job gets from the engine's job runner."""

    cancelled: threading.Event

    def progress(self, done: int, total: int | None = None, message: str = "", unit: str = "") -> None: ...


# (engine, args, context) -> result mapping; runs in its own thread
JobFactory = Callable[[Any, Mapping[str, Any], JobContext], Mapping[str, Any]]


@dataclass
class EngineParts:
    gpu: Sampler | None = None  # latest() -> GpuView
    processes: ProcessSampler | None = None  # latest() -> WorkersView
    host: Sampler | None = None  # latest() -> HostView
    progress: ProgressTracker | None = None
    classify_exit: ExitClassifier | None = None
    jobs: dict[str, JobFactory] = field(default_factory=dict)  # "verify" | "build" | "split"
    # monitor readings -> snapshot views (identity when the sampler already yields views)
    to_gpu_view: Callable[[Any], GpuView | None] = lambda x: x
    to_workers_view: Callable[[Any], WorkersView | None] = lambda x: x
    to_host_view: Callable[[Any], HostView | None] = lambda x: x

    def samplers(self) -> list[Sampler]:
        return [s for s in (self.gpu, self.processes, self.host) if s is not None]


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
        import logging

        while not self._stopping:
            try:
                self._latest = self._fn()
            except Exception:  # a sampler must outlive one bad reading
                logging.getLogger(__name__).exception("%s failed", self._name)
            if self._on_sample is not None:
                self._on_sample()
            self._wake.wait(self.interval_s)
            self._wake.clear()


class NoGpu:
    """The GPU part when no sampler is wired: a plain "no GPU" with the reason."""

    def __init__(self, reason: str) -> None:
        self._view = GpuView(available=False, reason=reason)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def latest(self) -> GpuView:
        return self._view


class NoProgress:
    """The progress part when no tracker is wired: progress stays unknown."""

    def reset(self, now: float) -> None:
        pass

    def feed_output(self, text: str, now: float) -> Sequence[Finding]:
        return ()

    def feed_report(self, line: str, now: float) -> Sequence[Finding]:
        return ()

    def view(self, now: float) -> ProgressView | None:
        return None


def default_parts(config: Any) -> EngineParts:
    """The implementations this build has. The one composition point for the other packages."""
    parts = EngineParts()
    parts.gpu = NoGpu("disabled in config ([monitor] gpu = false)") if not config.monitor.gpu else NoGpu("GPU sampler not built in")
    parts.progress = NoProgress()
    return parts


def _now() -> float:
    return time.time()
