"""Prometheus metrics from engine snapshots (opt-in, loopback unless told otherwise).

The collector reads the engine's latest snapshot at scrape time, so Prometheus sees exactly
the figures the dashboard shows, with no second sampling path. It uses its own registry:
the process and platform collectors of the default registry describe the engine process,
not the training, and would only confuse a dashboard built on these metrics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import CachewatchError
from ..monitor.gpu import GpuInfo
from ..training.progress import ProgressSnapshot
from .snapshot import EngineSnapshot

__all__ = ["SnapshotCollector", "MetricsServer", "start_metrics_server", "TRAINING_STATES"]

TRAINING_STATES = ("starting", "running", "paused", "restarting", "exited", "stopped", "failed")


class SnapshotCollector(Collector):
    """Turns ``snapshot_fn()`` (an ``EngineSnapshot``) into metric families on each scrape."""

    def __init__(self, snapshot_fn: Callable[[], EngineSnapshot | None]) -> None:
        self._snapshot_fn = snapshot_fn

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot_fn()
        if snap is None:
            return
        engine = snap.engine.name
        info = GaugeMetricFamily("cachewatch_engine_info", "The engine (value 1)", labels=["engine", "version", "hostname"])
        info.add_metric([engine, snap.engine.version, snap.engine.hostname], 1)
        yield info
        yield from self._caches(snap, engine)
        yield from self._training(snap, engine)
        yield from self._gpu(snap, engine)
        yield from self._host(snap, engine)
        active = GaugeMetricFamily("cachewatch_alerts_active", "Alerts not dismissed whose condition holds",
                                   labels=["engine", "severity"])
        for sev in ("info", "warning", "error", "critical"):
            active.add_metric([engine, sev], sum(1 for a in snap.alerts if a.severity == sev and a.active and not a.dismissed))
        yield active

    def _caches(self, snap: EngineSnapshot, engine: str) -> Iterator[Any]:
        gauges = {
            "size_bytes": ("cachewatch_cache_size_bytes", "Bytes of entry files on disk (block-rounded)"),
            "used_bytes": ("cachewatch_cache_used_bytes", "Bytes on disk plus writes in flight (what the bound applies to)"),
            "max_bytes": ("cachewatch_cache_max_bytes", "Hard limit"),
            "target_bytes": ("cachewatch_cache_target_bytes", "Eviction target"),
            "reserved_bytes": ("cachewatch_cache_reserved_bytes", "Bytes reserved by writes in flight"),
            "entries": ("cachewatch_cache_entries", "Live entries"),
            "quarantined_bytes": ("cachewatch_cache_quarantined_bytes",
                                  "Bytes of expired write leases not reconciled yet (a Redis-indexed cache; else 0)"),
        }
        counters = {
            "hits": ("cachewatch_cache_hits", "Reads that found the entry"),
            "misses": ("cachewatch_cache_misses", "Reads that did not"),
            "evicted_files": ("cachewatch_cache_evicted_files", "Entries evicted"),
            "evicted_bytes": ("cachewatch_cache_evicted_bytes", "Bytes evicted"),
        }
        g = {k: GaugeMetricFamily(n, h, labels=["engine", "root"]) for k, (n, h) in gauges.items()}
        c = {k: CounterMetricFamily(n, h, labels=["engine", "root"]) for k, (n, h) in counters.items()}
        free = GaugeMetricFamily("cachewatch_cache_disk_free_bytes", "Free bytes on the cache's filesystem", labels=["engine", "root"])
        for view in snap.caches:
            s = view.stats
            if s is None:
                continue
            labels = [engine, view.root]
            for k, fam in g.items():
                fam.add_metric(labels, getattr(s, k))
            for k, counter in c.items():
                counter.add_metric(labels, getattr(s, k))
            if view.disk_free_bytes is not None:
                free.add_metric(labels, view.disk_free_bytes)
        for w in snap.watched:
            labels = [engine, w.root]
            g["size_bytes"].add_metric(labels, w.size_bytes)
            g["max_bytes"].add_metric(labels, w.max_bytes)
            g["target_bytes"].add_metric(labels, w.target_bytes)
            g["entries"].add_metric(labels, w.entries)
            g["used_bytes"].add_metric(labels, w.size_bytes)
            c["evicted_files"].add_metric(labels, w.evicted_files)
            c["evicted_bytes"].add_metric(labels, w.evicted_bytes)
            if w.disk_free_bytes is not None:
                free.add_metric(labels, w.disk_free_bytes)
        yield from g.values()
        yield from c.values()
        yield free

    def _training(self, snap: EngineSnapshot, engine: str) -> Iterator[Any]:
        t = snap.training
        state = GaugeMetricFamily("cachewatch_training_state", "1 for the training's current state", labels=["engine", "state"])
        restarts = CounterMetricFamily("cachewatch_training_restarts", "Relaunches of the training", labels=["engine"])
        duration = GaugeMetricFamily("cachewatch_training_duration_seconds", "Wall time of the current attempt", labels=["engine"])
        exit_code = GaugeMetricFamily("cachewatch_training_exit_code", "Exit code of the last attempt that ended", labels=["engine"])
        if t is not None:
            for s in TRAINING_STATES:
                state.add_metric([engine, s], 1.0 if t.state.value == s else 0.0)
            restarts.add_metric([engine], t.restarts)
            d = t.duration_s(snap.time)
            if d is not None:
                duration.add_metric([engine], d)
            if t.exit_code is not None:
                exit_code.add_metric([engine], t.exit_code)
        yield from (state, restarts, duration, exit_code)
        p = snap.progress
        fields: dict[str, tuple[str, Callable[[ProgressSnapshot], float | int | None]]] = {
            "cachewatch_training_epoch": ("Epoch in progress (1-based)", lambda p: p.epoch),
            "cachewatch_training_epochs_total": ("Epochs planned", lambda p: p.total_epochs),
            "cachewatch_training_step": ("Step within the epoch", lambda p: p.step),
            "cachewatch_training_steps_per_epoch": ("Steps per epoch", lambda p: p.total_steps),
            "cachewatch_training_loss": ("Last reported loss", lambda p: p.loss),
            "cachewatch_training_eta_seconds": ("Estimated time to the end of the training", lambda p: p.eta.remaining_s),
            "cachewatch_training_finish_timestamp_seconds": ("Estimated end of the training (Unix time)",
                                                             lambda p: p.eta.finish_time),
            "cachewatch_training_seconds_per_step": ("Average seconds per step (batch)", lambda p: p.eta.step_s),
            "cachewatch_training_epoch_seconds": ("Average epoch duration", lambda p: p.eta.avg_epoch_s),
        }
        for name, (help_, read) in fields.items():
            fam = GaugeMetricFamily(name, help_, labels=["engine"])
            value = read(p) if p is not None else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                fam.add_metric([engine], float(value))
            yield fam
        w = snap.workers
        workers = GaugeMetricFamily("cachewatch_training_workers", "DataLoader worker processes", labels=["engine"])
        procs = GaugeMetricFamily("cachewatch_training_processes", "Processes in the training's tree", labels=["engine"])
        rss = GaugeMetricFamily("cachewatch_training_rss_bytes", "Resident memory of the training's process tree", labels=["engine"])
        cpu = GaugeMetricFamily("cachewatch_training_cpu_percent", "CPU of the training's process tree (100 = one core)", labels=["engine"])
        if w is not None and w.processes:
            workers.add_metric([engine], w.worker_count)
            procs.add_metric([engine], len(w.processes))
            rss.add_metric([engine], w.rss_bytes_total)
            total_cpu = w.cpu_percent_total
            if total_cpu is not None:
                cpu.add_metric([engine], total_cpu)
        yield from (workers, procs, rss, cpu)

    def _gpu(self, snap: EngineSnapshot, engine: str) -> Iterator[Any]:
        gpu = snap.gpu
        available = GaugeMetricFamily("cachewatch_gpu_available", "1 when GPUs are sampled through NVML and present", labels=["engine"])
        devices = gpu.gpus if gpu is not None else ()
        available.add_metric([engine], 1.0 if gpu is not None and gpu.state == "ok" and devices else 0.0)
        yield available
        labels = ["engine", "gpu", "name"]
        fams: list[tuple[GaugeMetricFamily, Callable[[GpuInfo], float | int | None]]] = [
            (GaugeMetricFamily("cachewatch_gpu_utilization_ratio", "GPU utilization (0-1)", labels=labels),
             lambda d: None if d.utilization_percent is None else d.utilization_percent / 100.0),
            (GaugeMetricFamily("cachewatch_gpu_memory_used_bytes", "GPU memory used", labels=labels),
             lambda d: d.memory_used_bytes),
            (GaugeMetricFamily("cachewatch_gpu_memory_total_bytes", "GPU memory total", labels=labels),
             lambda d: d.memory_total_bytes),
            (GaugeMetricFamily("cachewatch_gpu_temperature_celsius", "GPU temperature", labels=labels),
             lambda d: d.temperature_c),
            (GaugeMetricFamily("cachewatch_gpu_power_watts", "GPU power draw", labels=labels), lambda d: d.power_w),
            (GaugeMetricFamily("cachewatch_gpu_training_memory_bytes", "GPU memory held by the training's processes",
                               labels=labels), lambda d: d.training_memory_bytes),
        ]
        for dev in devices:
            lab = [engine, str(dev.index), dev.name or ""]
            for fam, read in fams:
                value = read(dev)
                if value is not None:
                    fam.add_metric(lab, float(value))
        yield from (fam for fam, _ in fams)

    def _host(self, snap: EngineSnapshot, engine: str) -> Iterator[Any]:
        h = snap.host
        total = GaugeMetricFamily("cachewatch_host_memory_total_bytes", "System memory", labels=["engine"])
        avail = GaugeMetricFamily("cachewatch_host_memory_available_bytes", "System memory available", labels=["engine"])
        ratio = GaugeMetricFamily("cachewatch_host_memory_ratio", "System memory in use (0-1), what the alert compares", labels=["engine"])
        disk = GaugeMetricFamily("cachewatch_host_disk_free_bytes", "Free bytes on the cache root's filesystem", labels=["engine", "path"])
        if h is not None and h.memory.total_bytes:
            total.add_metric([engine], h.memory.total_bytes)
            avail.add_metric([engine], h.memory.available_bytes)
            ratio.add_metric([engine], h.memory.percent / 100.0)
        if h is not None and h.disk is not None:
            disk.add_metric([engine, h.disk.path], h.disk.free_bytes)
        yield from (total, avail, ratio, disk)


@dataclass
class MetricsServer:
    url: str
    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(snapshot_fn: Callable[[], EngineSnapshot | None], port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` (port 0 picks a free one) in a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot_fn))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise CachewatchError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); pick another --metrics-port or [metrics] port"
        ) from None
    real_port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return MetricsServer(url=f"http://{shown}:{real_port}/metrics", host=host, port=real_port, _server=server, _thread=thread)
