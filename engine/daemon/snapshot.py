"""The engine at one instant, as immutable values: what clients render and metrics export.

Every type here is a frozen dataclass with units in its field names; ``to_json()`` /
``from_json()`` convert at the edge (the socket, ``status --json``). A dashboard holds one
:class:`EngineSnapshot` and renders it; nothing in it changes under the renderer.

Five fields hold the snapshots of the packages the engine composes, unchanged and typed:
``progress`` (:class:`~cachewatch.engine.training.progress.ProgressSnapshot`: epoch, step,
loss, ETA), ``workers`` (:class:`~cachewatch.engine.monitor.process_tree.TreeSnapshot`: the
training's processes and DataLoader workers), ``gpu``
(:class:`~cachewatch.engine.monitor.gpu.GpuSnapshot`), ``host``
(:class:`~cachewatch.engine.monitor.host.HostSnapshot`) and ``watched`` (one
:class:`~cachewatch.engine.watch.stats.WatchStats` per ``[[watch]]`` directory). Each is
decoded with its own ``from_json``; a reader uses plain attributes (``snap.gpu.gpus[0].power_w``),
so a misspelled name is a type error (mypy runs in CI) or an ``AttributeError``, never a
silent blank. A part the engine does not have is None (``gpu`` None means GPUs are not
sampled at all; "no GPU on this machine" is a ``GpuSnapshot`` whose ``state`` says so).
The daemon may import these packages; they never import the daemon (an import-linter
contract in pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Self

from ..cache.types import CacheStats
from ..monitor.gpu import GpuSnapshot
from ..monitor.host import HostSnapshot
from ..monitor.process_tree import TreeSnapshot
from ..training.progress import ProgressSnapshot
from ..training.runstate import TrainingInfo
from ..watch.stats import WatchStats
from .codec import from_json as _from_json
from .codec import frozen_map
from .codec import to_json as _to_json

__all__ = [
    "EngineInfo",
    "CacheView",
    "EvictionView",
    "Alert",
    "JobView",
    "EngineSnapshot",
    "cache_stats_from_json",
]


class _Json:
    """``to_json`` / ``from_json`` through the generic codec."""

    __json_generic__ = True

    def __post_init__(self) -> None:
        # Immutable all the way down: a dict or list handed in becomes a read-only view or a tuple.
        import dataclasses

        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, dict):
                object.__setattr__(self, f.name, frozen_map(value))
            elif isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _to_json(self)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return _from_json(cls, data)


def cache_stats_from_json(data: Mapping[str, Any]) -> CacheStats:
    """``CacheStats.to_json()`` back into a ``CacheStats`` (derived keys are dropped)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(CacheStats)}
    d = {k: v for k, v in data.items() if k in names}
    if "nodes" in d:
        d["nodes"] = tuple(d["nodes"])
    return CacheStats(**d)


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
    log_start_offset: int = 0  # where this engine's part of the (appended) training log begins
    events_path: str = ""
    interval_s: float = 1.0
    metrics_url: str | None = None
    readonly: bool = False


@dataclass(frozen=True)
class CacheView(_Json):
    """A managed cache: its ``CacheStats`` plus the filesystem around it."""

    root: str
    stats: CacheStats | None = None
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    error: str | None = None  # why stats could not be read this time


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
    # From the job's JobProgress (engine/jobs/base.py): what it is doing now, bytes, estimate.
    phase: str = ""  # e.g. "load", "split", "hash", "build"
    bytes_done: int = 0
    bytes_total: int | None = None
    eta_s: float | None = None  # None until it can be estimated


@dataclass(frozen=True)
class EngineSnapshot(_Json):
    """Everything a client shows. ``seq`` grows by one per snapshot the engine publishes."""

    seq: int
    time: float
    engine: EngineInfo
    training: TrainingInfo | None = None
    progress: ProgressSnapshot | None = None  # epoch/step/loss and ``eta`` (EtaEstimate)
    workers: TreeSnapshot | None = None  # processes with role, CPU, RSS; ``worker_count``
    gpu: GpuSnapshot | None = None  # ``state``/``reason``, per-GPU figures, training's GPU memory
    host: HostSnapshot | None = None  # memory, swap, disk of the cache root, host alerts
    caches: tuple[CacheView, ...] = ()
    watched: tuple[WatchStats, ...] = ()  # one per [[watch]] directory
    evictions: tuple[EvictionView, ...] = ()  # newest first
    alerts: tuple[Alert, ...] = ()  # newest first
    jobs: tuple[JobView, ...] = ()  # running first, then the most recent finished
    log_size_bytes: int = 0  # where the training log ends now (offset for `log`)

    def to_json(self) -> dict[str, Any]:
        """JSON of the snapshot. Parts unchanged since the previous snapshot (the same immutable
        objects: a GPU reading, a cache view, an alert) reuse their JSON, which makes frequent
        snapshots (progress at 10 Hz) cheap; treat the result as read-only."""
        out: dict[str, Any] = {}
        for f in _SNAPSHOT_FIELDS:
            value = getattr(self, f)
            if isinstance(value, tuple):
                out[f] = [_part_json(v) for v in value]
            else:
                out[f] = _part_json(value)
        if self.training is not None:
            out["training"] = self.training.to_json(self.time)
        return out

    @property
    def active_alerts(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if not a.dismissed)


_SNAPSHOT_FIELDS = tuple(f.name for f in __import__("dataclasses").fields(EngineSnapshot))
_MEMO: "dict[int, tuple[Any, Any]]" = {}
_MEMO_MAX = 256


def _part_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    hit = _MEMO.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    out = _to_json(value)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()  # parts are replaced every sample; old entries are garbage anyway
    _MEMO[id(value)] = (value, out)  # the object is kept alive, so its id is not reused meanwhile
    return out
