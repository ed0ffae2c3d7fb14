"""What an engine tells the fleet each interval: a small summary of its ``EngineSnapshot``.

A few hundred bytes per engine, so that a dashboard reads twenty of them in one round trip
each second. The full snapshot travels only while someone drills down into that engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from ..daemon.snapshot import EngineSnapshot

__all__ = ["FleetSummary", "GpuLine", "CacheLine", "AlertLine", "JobLine", "SUMMARY_VERSION", "shared_caches"]

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class GpuLine:
    index: int
    utilization_percent: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class CacheLine:
    root: str
    kind: str  # "cache" | "watch"
    used_bytes: int = 0
    target_bytes: int = 0
    max_bytes: int = 0
    hit_rate: float | None = None
    error: str | None = None
    index: str | None = None  # a shared (Redis-indexed) cache: its index URL, identity and writers
    index_id: str | None = None
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertLine:
    kind: str
    severity: str
    title: str


@dataclass(frozen=True)
class JobLine:
    id: str
    kind: str
    state: str
    done: int = 0
    total: int | None = None


@dataclass(frozen=True)
class FleetSummary:
    host: str
    name: str
    pid: int
    version: str
    started: float
    time: float  # the engine's clock when it built this (shown only; freshness is the server's clock)
    interval_s: float
    accept_commands: bool = False
    metrics_url: str | None = None
    training_state: str | None = None  # None: this engine runs no training
    attempt: int = 0
    training_pid: int | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    fraction_done: float | None = None
    loss: float | None = None
    eta_s: float | None = None
    finish_time: float | None = None
    gpus: tuple[GpuLine, ...] = ()
    workers: int | None = None
    host_memory_used_bytes: int | None = None
    host_memory_total_bytes: int | None = None
    caches: tuple[CacheLine, ...] = ()  # the managed cache, then each watched directory
    alerts: tuple[AlertLine, ...] = ()  # active, not dismissed
    job: JobLine | None = None  # the running job, if any
    v: int = SUMMARY_VERSION

    @property
    def cache_used_fraction(self) -> float | None:
        """The fullest cache or watched directory, as used/max (what a person worries about)."""
        ratios = [c.used_bytes / c.max_bytes for c in self.caches if c.max_bytes > 0]
        return max(ratios) if ratios else None

    @property
    def gpu_utilization_percent(self) -> float | None:
        values = [g.utilization_percent for g in self.gpus if g.utilization_percent is not None]
        return sum(values) / len(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FleetSummary":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}  # a newer engine may add keys
        d["gpus"] = tuple(GpuLine(**_known(GpuLine, g)) for g in d.get("gpus", ()))
        d["caches"] = tuple(_cache_line(c) for c in d.get("caches", ()))
        d["alerts"] = tuple(AlertLine(**_known(AlertLine, a)) for a in d.get("alerts", ()))
        job = d.get("job")
        d["job"] = None if job is None else JobLine(**_known(JobLine, job))
        return cls(**d)

    @classmethod
    def from_snapshot(cls, snap: EngineSnapshot, *, host: str, accept_commands: bool, interval_s: float) -> "FleetSummary":
        e = snap.engine
        t, p = snap.training, snap.progress
        eta = p.eta if p is not None else None
        gpus: tuple[GpuLine, ...] = ()
        if snap.gpu is not None:
            gpus = tuple(GpuLine(g.index, g.utilization_percent, g.memory_used_bytes, g.memory_total_bytes)
                         for g in snap.gpu.gpus if not g.lost)
        caches: list[CacheLine] = []
        for c in snap.caches:
            if c.stats is None:
                caches.append(CacheLine(c.root, "cache", error=c.error))
            else:
                s = c.stats
                caches.append(CacheLine(c.root, "cache", s.used_bytes, s.target_bytes, s.max_bytes, s.hit_rate,
                                        index=s.index, index_id=s.index_id, nodes=tuple(s.nodes)))
        for w in snap.watched:
            caches.append(CacheLine(w.root, "watch", w.used_bytes, w.target_bytes, w.max_bytes, w.hit_rate))
        running = next((j for j in snap.jobs if j.state == "running"), None)
        mem = snap.host.memory if snap.host is not None else None
        return cls(
            host=host,
            name=e.name,
            pid=e.pid,
            version=e.version,
            started=e.started,
            time=snap.time,
            interval_s=interval_s,
            accept_commands=accept_commands,
            metrics_url=e.metrics_url,
            training_state=None if t is None else t.state.value,
            attempt=0 if t is None else t.attempt,
            training_pid=None if t is None else t.pid,
            epoch=None if p is None else p.epoch,
            total_epochs=None if p is None else p.total_epochs,
            step=None if p is None else p.step,
            total_steps=None if p is None else p.total_steps,
            fraction_done=None if eta is None else eta.fraction_done,
            loss=None if p is None else _finite(p.loss),
            eta_s=None if eta is None else eta.remaining_s,
            finish_time=None if eta is None else eta.finish_time,
            gpus=gpus,
            workers=None if snap.workers is None else snap.workers.worker_count,
            host_memory_used_bytes=None if mem is None else mem.used_bytes,
            host_memory_total_bytes=None if mem is None else mem.total_bytes,
            caches=tuple(caches),
            alerts=tuple(AlertLine(a.kind, a.severity, a.title) for a in snap.alerts if a.active and not a.dismissed),
            job=None if running is None else JobLine(running.id, running.kind, running.state, running.done, running.total),
        )


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _finite(x: float | None) -> float | None:
    # A diverged loss (NaN, inf) is not JSON; the fleet shows it as unknown, the engine's own view keeps it.
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return x


def _cache_line(c: Mapping[str, Any]) -> CacheLine:
    d = _known(CacheLine, c)
    if "nodes" in d:
        d["nodes"] = tuple(d["nodes"])
    return CacheLine(**d)


def shared_caches(summaries: "list[FleetSummary]") -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """Each shared (Redis-indexed) cache the fleet's engines use: (index id, index URL, the nodes
    that write to it, the engines using it as ``host/name``), for "which nodes write to which cache"."""
    by_id: dict[str, tuple[str, set[str], set[str]]] = {}
    for s in summaries:
        for c in s.caches:
            if c.index_id is None:
                continue
            url, nodes, engines = by_id.setdefault(c.index_id, (c.index or "", set(), set()))
            nodes.update(c.nodes)
            engines.add(f"{s.host}/{s.name}")
    return [(i, url, tuple(sorted(n)), tuple(sorted(e))) for i, (url, n, e) in sorted(by_id.items())]
