"""The engine at one instant, as immutable values: what clients render and metrics export.

Every type here is a frozen dataclass with units in its field names; ``to_json()`` /
``from_json()`` convert at the edge (the socket, ``status --json``). A dashboard holds one
:class:`EngineSnapshot` and renders it; nothing in it changes under the renderer.

Parts the engine does not have are empty, never missing: no training gives
``training=None``, no GPU gives ``GpuView(available=False, reason=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..cache.types import CacheStats
from ..training.runstate import TrainingInfo
from .codec import from_json as _from_json
from .codec import frozen_map
from .codec import to_json as _to_json

__all__ = [
    "EngineInfo",
    "ProgressView",
    "ProcessView",
    "WorkersView",
    "GpuDevice",
    "GpuView",
    "HostView",
    "CacheView",
    "WatchedView",
    "EvictionView",
    "Alert",
    "JobView",
    "EngineSnapshot",
    "cache_stats_from_json",
]


class _Json:
    """``to_json`` / ``from_json`` through the generic codec."""

    __json_generic__ = True

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Any:
        return _from_json(cls, data)


def cache_stats_from_json(data: Mapping[str, Any]) -> CacheStats:
    """``CacheStats.to_json()`` back into a ``CacheStats`` (derived keys are dropped)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(CacheStats)}
    return CacheStats(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EngineInfo(_Json):
    name: str
    pid: int
    version: str
    protocol: str
    started: float
    hostname: str = ""
    config_path: str | None = None
    state_dir: str = ""
    socket_path: str = ""
    log_path: str = ""  # the training's output
    events_path: str = ""
    interval_s: float = 1.0
    metrics_url: str | None = None
    readonly: bool = False


@dataclass(frozen=True)
class ProgressView(_Json):
    """Training progress as the engine last understood it (reporting API or parsed output)."""

    source: str = ""  # "report" (the script reports) or "output" (parsed from the log)
    updated: float | None = None  # when the last progress line arrived
    epoch: int | None = None  # 1-based, the epoch in progress
    total_epochs: int | None = None
    step: int | None = None  # within the epoch
    total_steps: int | None = None
    global_step: int | None = None
    loss: float | None = None
    metrics: Mapping[str, float] = field(default_factory=frozen_map)
    s_per_step: float | None = None
    steps_per_s: float | None = None
    avg_epoch_s: float | None = None
    epoch_eta_s: float | None = None  # until the end of this epoch
    eta_s: float | None = None  # until the end of the training
    finish_time: float | None = None  # wall clock, seconds since the epoch
    last_checkpoint: str | None = None
    last_checkpoint_time: float | None = None
    eta_method: str = ""


@dataclass(frozen=True)
class ProcessView(_Json):
    pid: int
    name: str
    role: str  # "main" | "worker" | "child"
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    gpu_memory_bytes: int | None = None
    status: str = ""


@dataclass(frozen=True)
class WorkersView(_Json):
    """The training's process tree; ``workers`` counts DataLoader workers."""

    workers: int = 0
    processes: tuple[ProcessView, ...] = ()
    total_cpu_percent: float = 0.0
    total_rss_bytes: int = 0


@dataclass(frozen=True)
class GpuDevice(_Json):
    index: int
    name: str = ""
    uuid: str = ""
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    training_memory_bytes: int | None = None  # the training tree's share of this GPU


@dataclass(frozen=True)
class GpuView(_Json):
    available: bool = False
    reason: str = "not sampled"  # why not available: "no NVIDIA driver", "disabled in config"...
    driver: str = ""
    devices: tuple[GpuDevice, ...] = ()
    training_memory_bytes: int | None = None


@dataclass(frozen=True)
class HostView(_Json):
    memory_total_bytes: int = 0
    memory_used_bytes: int = 0
    memory_available_bytes: int = 0
    memory_ratio: float = 0.0
    memory_alert_ratio: float = 0.85
    swap_used_bytes: int = 0
    cpu_count: int = 0
    cpu_percent: float | None = None
    load_1m: float | None = None


@dataclass(frozen=True)
class CacheView(_Json):
    """A managed cache: its ``CacheStats`` plus the filesystem around it."""

    root: str
    stats: CacheStats | None = None
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    error: str | None = None  # why stats could not be read this time


@dataclass(frozen=True)
class WatchedView(_Json):
    """A watched directory (written by other code), kept under its limit from outside."""

    root: str
    size_bytes: int = 0
    max_bytes: int = 0
    target_bytes: int = 0
    files: int = 0
    evicted_files: int = 0
    evicted_bytes: int = 0
    dry_run: bool = False
    disk_free_bytes: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class EvictionView(_Json):
    time: float
    cache: str  # root of the cache or watched directory
    reason: str
    files: int
    bytes: int
    size_before: int
    size_after: int
    dry_run: bool = False


@dataclass(frozen=True)
class Alert(_Json):
    """Something a person should look at. Dismissed alerts stay (greyed) until they expire."""

    id: str
    kind: str  # "cuda_oom", "host_oom_kill", "memory", "disk", "cache_over_max", "training_failed"...
    severity: str  # "info" | "warning" | "error" | "critical"
    title: str
    text: str = ""
    remedies: tuple[str, ...] = ()
    time: float = 0.0  # first raised
    last_time: float = 0.0  # last raised again
    count: int = 1
    dismissed: bool = False
    active: bool = True  # the condition still holds (memory alerts clear themselves)
    figures: Mapping[str, Any] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class JobView(_Json):
    id: str
    kind: str  # "verify" | "build" | "split" | "evict"
    state: str  # "running" | "done" | "failed" | "cancelled"
    started: float
    ended: float | None = None
    done: int = 0
    total: int | None = None
    unit: str = ""
    message: str = ""
    result: Mapping[str, Any] = field(default_factory=frozen_map)
    error: str | None = None


@dataclass(frozen=True)
class EngineSnapshot(_Json):
    """Everything a client shows. ``seq`` grows by one per snapshot the engine publishes."""

    seq: int
    time: float
    engine: EngineInfo
    training: TrainingInfo | None = None
    progress: ProgressView | None = None
    workers: WorkersView | None = None
    gpu: GpuView = field(default_factory=GpuView)
    host: HostView | None = None
    caches: tuple[CacheView, ...] = ()
    watched: tuple[WatchedView, ...] = ()
    evictions: tuple[EvictionView, ...] = ()  # newest first
    alerts: tuple[Alert, ...] = ()  # newest first
    jobs: tuple[JobView, ...] = ()  # running first, then the most recent finished
    log_size_bytes: int = 0  # where the training log ends now (offset for `log`)

    def to_json(self) -> dict[str, Any]:
        out = _to_json(self)
        if self.training is not None:
            out["training"] = self.training.to_json(self.time)
        return out

    @property
    def active_alerts(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if not a.dismissed)
