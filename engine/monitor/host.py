"""The machine around the training: CPU, system memory, swap, and the disk that holds the cache.

Memory use is ``(total - available) / total``, the share the kernel cannot hand out
without reclaiming (what ``free`` calls used plus what cannot be dropped). Disk use is
``used / (used + free)`` as ``df`` shows it, where ``free`` is what an ordinary user can
still write (the root-reserved blocks excluded), the figures ``shutil.disk_usage`` gives.

An alert is present in a snapshot for as long as its condition holds; whoever turns
alerts into events (the daemon) emits one when an alert appears or goes away.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import psutil

from ..sizes import format_size
from .errors import MonitorError
from .sampler import DEFAULT_HISTORY_LEN, BackgroundSampler

__all__ = [
    "MemoryFigures",
    "SwapFigures",
    "DiskFigures",
    "HostAlert",
    "HostSnapshot",
    "HostSampler",
    "ALERT_MEMORY",
    "ALERT_DISK",
    "DEFAULT_MEMORY_ALERT",
    "DEFAULT_DISK_ALERT",
    "read_disk",
]

ALERT_MEMORY = "memory"
ALERT_DISK = "disk"
DEFAULT_MEMORY_ALERT = 0.85
DEFAULT_DISK_ALERT = 0.95


@dataclass(frozen=True)
class MemoryFigures:
    total_bytes: int
    used_bytes: int  # psutil's "used" (total - free - buffers - cache), as `free` prints it
    available_bytes: int
    percent: float  # (total - available) / total x 100: what the alert compares

    @property
    def used_fraction(self) -> float:
        return self.percent / 100.0

    def to_json(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "used_bytes": self.used_bytes,
                "available_bytes": self.available_bytes, "percent": self.percent}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "MemoryFigures":
        return cls(int(d["total_bytes"]), int(d["used_bytes"]), int(d["available_bytes"]), float(d["percent"]))


@dataclass(frozen=True)
class SwapFigures:
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float

    def to_json(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "used_bytes": self.used_bytes,
                "free_bytes": self.free_bytes, "percent": self.percent}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SwapFigures":
        return cls(int(d["total_bytes"]), int(d["used_bytes"]), int(d["free_bytes"]), float(d["percent"]))


@dataclass(frozen=True)
class DiskFigures:
    path: str  # the path asked about (the cache root)
    measured_path: str  # the nearest existing directory, where the filesystem was read
    total_bytes: int
    used_bytes: int
    free_bytes: int  # writable by an ordinary user

    @property
    def used_fraction(self) -> float:
        denominator = self.used_bytes + self.free_bytes
        return self.used_bytes / denominator if denominator else 0.0

    @property
    def percent(self) -> float:
        return self.used_fraction * 100.0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "measured_path": self.measured_path, "total_bytes": self.total_bytes,
                "used_bytes": self.used_bytes, "free_bytes": self.free_bytes, "percent": self.percent}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "DiskFigures":
        return cls(str(d["path"]), str(d["measured_path"]), int(d["total_bytes"]), int(d["used_bytes"]), int(d["free_bytes"]))


@dataclass(frozen=True)
class HostAlert:
    kind: str  # "memory" or "disk"
    message: str  # one line for the dashboard and the event log
    used_fraction: float
    threshold: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "used_fraction": self.used_fraction, "threshold": self.threshold}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "HostAlert":
        return cls(str(d["kind"]), str(d["message"]), float(d["used_fraction"]), float(d["threshold"]))


@dataclass(frozen=True)
class HostSnapshot:
    time: float
    cpu_count: int
    cpu_percent: float | None  # whole machine, 0-100 over all cores, since the previous sample; None at first
    memory: MemoryFigures
    swap: SwapFigures
    disk: DiskFigures | None
    disk_reason: str | None  # why ``disk`` is None: no cache root configured, unreadable path
    alerts: tuple[HostAlert, ...] = ()

    def alert(self, kind: str) -> HostAlert | None:
        return next((a for a in self.alerts if a.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "cpu_count": self.cpu_count,
            "cpu_percent": self.cpu_percent,
            "memory": self.memory.to_json(),
            "swap": self.swap.to_json(),
            "disk": None if self.disk is None else self.disk.to_json(),
            "disk_reason": self.disk_reason,
            "alerts": [a.to_json() for a in self.alerts],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "HostSnapshot":
        return cls(
            time=float(d["time"]),
            cpu_count=int(d["cpu_count"]),
            cpu_percent=None if d.get("cpu_percent") is None else float(d["cpu_percent"]),
            memory=MemoryFigures.from_json(d["memory"]),
            swap=SwapFigures.from_json(d["swap"]),
            disk=None if d.get("disk") is None else DiskFigures.from_json(d["disk"]),
            disk_reason=d.get("disk_reason"),
            alerts=tuple(HostAlert.from_json(a) for a in d.get("alerts", ())),
        )


def check_threshold(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MonitorError(f"{what} = {value!r} is not a ratio; write a number in (0, 1], e.g. 0.85") from None
    if isinstance(value, bool) or not (0.0 < number <= 1.0):
        raise MonitorError(f"{what} = {value!r} is out of range; write a number in (0, 1], e.g. 0.85")
    return number


def _pct(fraction: float) -> str:
    # Whole percents, except for thresholds set below 1 % (tests, odd configs) which would all read "0%".
    value = fraction * 100.0
    return f"{value:.0f}%" if value >= 1 or value == 0 else f"{value:.2g}%"


def _nearest_existing(path: Path) -> Path:
    # A cache root that is not created yet will live on its parent's filesystem.
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def read_disk(path: str | os.PathLike[str]) -> tuple[DiskFigures | None, str | None]:
    """Disk figures of the filesystem holding ``path``, or (None, reason)."""
    asked = Path(os.path.abspath(os.fspath(path)))
    try:
        measured = _nearest_existing(asked)
        usage = shutil.disk_usage(measured)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        detail = getattr(exc, "strerror", None) or str(exc)
        return None, f"cannot read the disk of {str(asked)!r}: {detail}"
    return DiskFigures(str(asked), str(measured), usage.total, usage.used, usage.free), None


class HostSampler(BackgroundSampler[HostSnapshot]):
    """Samples CPU, memory, swap and the disk of ``disk_path`` (the cache root), with alert thresholds."""

    thread_name = "cachewatch-host"

    def __init__(
        self,
        disk_path: str | os.PathLike[str] | None = None,
        *,
        memory_alert: float = DEFAULT_MEMORY_ALERT,
        disk_alert: float = DEFAULT_DISK_ALERT,
        interval_s: float = 1.0,
        history_len: int = DEFAULT_HISTORY_LEN,
    ) -> None:
        super().__init__(interval_s=interval_s, history_len=history_len)
        self.memory_alert = check_threshold(memory_alert, "memory_alert")
        self.disk_alert = check_threshold(disk_alert, "disk_alert")
        self.disk_path = None if disk_path is None else os.fspath(disk_path)
        self._cpu_count = psutil.cpu_count() or 1
        self._last_cpu: tuple[float, float] | None = None

    def _cpu_percent(self) -> float | None:
        # psutil.cpu_percent(interval=None) keeps its baseline in module state shared with every
        # other caller in the process; a private baseline keeps two users from skewing each other.
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        total = sum(times)
        last, self._last_cpu = self._last_cpu, (idle, total)
        if last is None or total <= last[1]:
            return None
        busy = (total - last[1]) - (idle - last[0])
        return max(0.0, min(100.0, 100.0 * busy / (total - last[1])))

    def _take(self) -> HostSnapshot:
        now = time.time()
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        memory = MemoryFigures(vm.total, vm.used, vm.available, float(vm.percent))
        swap = SwapFigures(sw.total, sw.used, sw.free, float(sw.percent))
        if self.disk_path is None:
            disk, disk_reason = None, "no cache root configured"
        else:
            disk, disk_reason = read_disk(self.disk_path)
        alerts: list[HostAlert] = []
        used = (vm.total - vm.available) / vm.total if vm.total else 0.0
        if used > self.memory_alert:
            alerts.append(HostAlert(
                ALERT_MEMORY,
                f"system memory {_pct(used)} used (alert above {_pct(self.memory_alert)}): "
                f"{format_size(vm.available)} available of {format_size(vm.total)}",
                used,
                self.memory_alert,
            ))
        if disk is not None and disk.used_fraction > self.disk_alert:
            alerts.append(HostAlert(
                ALERT_DISK,
                f"disk of '{disk.path}' {_pct(disk.used_fraction)} full (alert above {_pct(self.disk_alert)}): "
                f"{format_size(disk.free_bytes)} free",
                disk.used_fraction,
                self.disk_alert,
            ))
        return HostSnapshot(now, self._cpu_count, self._cpu_percent(), memory, swap, disk, disk_reason, tuple(alerts))
