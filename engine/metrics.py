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

from .daemon.snapshot import part_value
from .errors import CachewatchError

__all__ = ["SnapshotCollector", "MetricsServer", "start_metrics_server", "TRAINING_STATES"]

TRAINING_STATES = ("starting", "running", "paused", "restarting", "exited", "stopped", "failed")


class SnapshotCollector(Collector):
    """Turns ``snapshot_fn()`` (an ``EngineSnapshot``) into metric families on each scrape."""

    def __init__(self, snapshot_fn: Callable[[], Any]) -> None:
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

    def _caches(self, snap: Any, engine: str) -> Iterator[Any]:
        gauges = {
            "size_bytes": ("cachewatch_cache_size_bytes", "Bytes of entry files on disk (block-rounded)"),
            "used_bytes": ("cachewatch_cache_used_bytes", "Bytes on disk plus writes in flight (what the bound applies to)"),
            "max_bytes": ("cachewatch_cache_max_bytes", "Hard limit"),
            "target_bytes": ("cachewatch_cache_target_bytes", "Eviction target"),
            "reserved_bytes": ("cachewatch_cache_reserved_bytes", "Bytes reserved by writes in flight"),
            "entries": ("cachewatch_cache_entries", "Live entries"),
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
            for k, fam in c.items():
                fam.add_metric(labels, getattr(s, k))
            if view.disk_free_bytes is not None:
                free.add_metric(labels, view.disk_free_bytes)
        for w in snap.watched:
            labels = [engine, str(part_value(w, "root", default=""))]
            for k in ("size_bytes", "max_bytes", "target_bytes", "entries"):
                g[k].add_metric(labels, part_value(w, k, default=0))
            g["used_bytes"].add_metric(labels, part_value(w, "size_bytes", default=0))
            for k in ("evicted_files", "evicted_bytes"):
                c[k].add_metric(labels, part_value(w, k, default=0))
            if part_value(w, "disk_free_bytes") is not None:
                free.add_metric(labels, part_value(w, "disk_free_bytes"))
        yield from g.values()
        yield from c.values()
        yield free

    def _training(self, snap: Any, engine: str) -> Iterator[Any]:
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
        fields = {
            ("epoch",): ("cachewatch_training_epoch", "Epoch in progress (1-based)"),
            ("total_epochs",): ("cachewatch_training_epochs_total", "Epochs planned"),
            ("step",): ("cachewatch_training_step", "Step within the epoch"),
            ("total_steps",): ("cachewatch_training_steps_per_epoch", "Steps per epoch"),
            ("loss",): ("cachewatch_training_loss", "Last reported loss"),
            ("eta", "remaining_s"): ("cachewatch_training_eta_seconds", "Estimated time to the end of the training"),
            ("eta", "finish_time"): ("cachewatch_training_finish_timestamp_seconds", "Estimated end of the training (Unix time)"),
            ("eta", "step_s"): ("cachewatch_training_seconds_per_step", "Average seconds per step (batch)"),
            ("eta", "avg_epoch_s"): ("cachewatch_training_epoch_seconds", "Average epoch duration"),
        }
        for path, (name, help_) in fields.items():
            fam = GaugeMetricFamily(name, help_, labels=["engine"])
            value = part_value(p, *path)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                fam.add_metric([engine], float(value))
            yield fam
        w = snap.workers
        workers = GaugeMetricFamily("cachewatch_training_workers", "DataLoader worker processes", labels=["engine"])
        procs = GaugeMetricFamily("cachewatch_training_processes", "Processes in the training's tree", labels=["engine"])
        rss = GaugeMetricFamily("cachewatch_training_rss_bytes", "Resident memory of the training's process tree", labels=["engine"])
        cpu = GaugeMetricFamily("cachewatch_training_cpu_percent", "CPU of the training's process tree (100 = one core)", labels=["engine"])
        if w is not None and part_value(w, "processes"):
            workers.add_metric([engine], part_value(w, "worker_count", default=0))
            procs.add_metric([engine], len(part_value(w, "processes")))
            rss.add_metric([engine], part_value(w, "rss_bytes_total", default=0))
            total_cpu = part_value(w, "cpu_percent_total")
            if total_cpu is not None:
                cpu.add_metric([engine], total_cpu)
        yield from (workers, procs, rss, cpu)

    def _gpu(self, snap: Any, engine: str) -> Iterator[Any]:
        gpu = snap.gpu
        available = GaugeMetricFamily("cachewatch_gpu_available", "1 when GPUs are sampled through NVML and present", labels=["engine"])
        devices = part_value(gpu, "gpus", default=())
        available.add_metric([engine], 1.0 if part_value(gpu, "state") == "ok" and devices else 0.0)
        yield available
        labels = ["engine", "gpu", "name"]
        fams = {
            "utilization_percent": GaugeMetricFamily("cachewatch_gpu_utilization_ratio", "GPU utilization (0-1)", labels=labels),
            "memory_used_bytes": GaugeMetricFamily("cachewatch_gpu_memory_used_bytes", "GPU memory used", labels=labels),
            "memory_total_bytes": GaugeMetricFamily("cachewatch_gpu_memory_total_bytes", "GPU memory total", labels=labels),
            "temperature_c": GaugeMetricFamily("cachewatch_gpu_temperature_celsius", "GPU temperature", labels=labels),
            "power_w": GaugeMetricFamily("cachewatch_gpu_power_watts", "GPU power draw", labels=labels),
            "training_memory_bytes": GaugeMetricFamily("cachewatch_gpu_training_memory_bytes",
                                                       "GPU memory held by the training's processes", labels=labels),
        }
        for dev in devices:
            lab = [engine, str(part_value(dev, "index")), str(part_value(dev, "name", default=""))]
            for attr, fam in fams.items():
                value = part_value(dev, attr)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    fam.add_metric(lab, value / 100.0 if attr == "utilization_percent" else float(value))
        yield from fams.values()

    def _host(self, snap: Any, engine: str) -> Iterator[Any]:
        h = snap.host
        total = GaugeMetricFamily("cachewatch_host_memory_total_bytes", "System memory", labels=["engine"])
        avail = GaugeMetricFamily("cachewatch_host_memory_available_bytes", "System memory available", labels=["engine"])
        ratio = GaugeMetricFamily("cachewatch_host_memory_ratio", "System memory in use (0-1), what the alert compares", labels=["engine"])
        disk = GaugeMetricFamily("cachewatch_host_disk_free_bytes", "Free bytes on the cache root's filesystem", labels=["engine", "path"])
        if part_value(h, "memory", "total_bytes"):
            total.add_metric([engine], part_value(h, "memory", "total_bytes"))
            avail.add_metric([engine], part_value(h, "memory", "available_bytes", default=0))
            ratio.add_metric([engine], part_value(h, "memory", "percent", default=0.0) / 100.0)
        if part_value(h, "disk", "free_bytes") is not None:
            disk.add_metric([engine, str(part_value(h, "disk", "path", default=""))], part_value(h, "disk", "free_bytes"))
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


def start_metrics_server(snapshot_fn: Callable[[], Any], port: int, host: str = "127.0.0.1") -> MetricsServer:
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
