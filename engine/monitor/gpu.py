"""GPU figures through NVML, sampled on a background thread: utilization, memory, temperature, power, processes.

A :class:`GpuSnapshot` is always produced, GPU or not: without NVML, a driver or a
device its ``state`` says which (``no_library``, ``no_driver``, ``no_gpu``...) and
``reason`` says why, in words fit for the dashboard. While sampling, a figure a GPU does
not support is ``None`` with the reason in ``missing``; a GPU that falls off the bus is
``lost`` and the others go on being sampled. After a driver-level failure NVML is shut
down and opened again ``retry_s`` later.

The training's own use of each GPU is the memory of the GPU processes whose pid is in
the training's process tree (given by ``training_pids``, usually the process tree
sampler). NVML reports pids as the host kernel sees them: inside a container with its
own pid namespace they do not match, and the training's share reads 0 (see
docs/monitoring.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .errors import MonitorError
from .nvml import (
    SCOPE_DRIVER,
    SCOPE_FIGURE,
    STATE_DISABLED,
    STATE_ERROR,
    STATE_NO_DRIVER,
    STATE_NO_GPU,
    STATE_OK,
    NotAvailable,
    NvmlBoundary,
    NvmlStart,
)
from .sampler import DEFAULT_HISTORY_LEN, BackgroundSampler

__all__ = ["GpuProcess", "GpuInfo", "GpuSnapshot", "MissingFigure", "GpuSampler", "GPU_FIGURES"]

# The per-GPU figures a sparkline can follow (GpuSampler.series).
GPU_FIGURES = ("utilization_percent", "memory_used_bytes", "temperature_c", "power_w", "training_memory_bytes")


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_gpu_memory_bytes: int | None  # None: NVML does not report per-process memory here
    in_training: bool = False  # the pid belongs to the supervised training's process tree

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "used_gpu_memory_bytes": self.used_gpu_memory_bytes, "in_training": self.in_training}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GpuProcess":
        return cls(int(d["pid"]), _opt_int(d.get("used_gpu_memory_bytes")), bool(d.get("in_training", False)))


@dataclass(frozen=True)
class MissingFigure:
    """A figure that could not be read this sample, and why (``not supported by this GPU or driver``)."""

    figure: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"figure": self.figure, "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "MissingFigure":
        return cls(str(d["figure"]), str(d["reason"]))


@dataclass(frozen=True)
class GpuInfo:
    """One GPU at one instant. Any figure may be None; ``missing`` says why."""

    index: int
    name: str | None
    utilization_percent: int | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcess, ...] = ()
    lost: bool = False  # the GPU stopped answering (fallen off the bus, needs a reset)
    missing: tuple[MissingFigure, ...] = ()

    @property
    def memory_used_fraction(self) -> float | None:
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return self.memory_used_bytes / self.memory_total_bytes

    @property
    def training_memory_bytes(self) -> int | None:
        """GPU memory of the training's processes on this GPU; None when NVML cannot tell per process."""
        if any(m.figure == "processes" for m in self.missing):
            return None
        mine = [p for p in self.processes if p.in_training]
        known = [p.used_gpu_memory_bytes for p in mine if p.used_gpu_memory_bytes is not None]
        if mine and not known:
            return None
        return sum(known)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "utilization_percent": self.utilization_percent,
            "memory_used_bytes": self.memory_used_bytes,
            "memory_total_bytes": self.memory_total_bytes,
            "temperature_c": self.temperature_c,
            "power_w": self.power_w,
            "power_limit_w": self.power_limit_w,
            "processes": [p.to_json() for p in self.processes],
            "lost": self.lost,
            "missing": [m.to_json() for m in self.missing],
            # derived, for clients that only read JSON
            "memory_used_fraction": self.memory_used_fraction,
            "training_memory_bytes": self.training_memory_bytes,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GpuInfo":
        return cls(
            index=int(d["index"]),
            name=d.get("name"),
            utilization_percent=_opt_int(d.get("utilization_percent")),
            memory_used_bytes=_opt_int(d.get("memory_used_bytes")),
            memory_total_bytes=_opt_int(d.get("memory_total_bytes")),
            temperature_c=_opt_int(d.get("temperature_c")),
            power_w=_opt_float(d.get("power_w")),
            power_limit_w=_opt_float(d.get("power_limit_w")),
            processes=tuple(GpuProcess.from_json(p) for p in d.get("processes", ())),
            lost=bool(d.get("lost", False)),
            missing=tuple(MissingFigure.from_json(m) for m in d.get("missing", ())),
        )


@dataclass(frozen=True)
class GpuSnapshot:
    """All GPUs at one instant, or the reason there are none to show."""

    time: float  # Unix time of the sample
    state: str  # "ok", "no_library", "no_driver", "no_gpu", "error", "disabled"
    reason: str | None  # None when state is "ok"
    gpus: tuple[GpuInfo, ...] = ()
    training_pids: tuple[int, ...] = field(default=())  # the process tree used to attribute memory

    @property
    def available(self) -> bool:
        return self.state == STATE_OK and bool(self.gpus)

    @property
    def training_gpu_memory_bytes(self) -> int | None:
        """GPU memory held by the training's processes on all GPUs; None with no GPU or no per-process figures."""
        if not self.gpus:
            return None
        per_gpu = [g.training_memory_bytes for g in self.gpus]
        if any(v is None for v in per_gpu) and not any(v for v in per_gpu):
            return None
        return sum(v for v in per_gpu if v is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "state": self.state,
            "reason": self.reason,
            "gpus": [g.to_json() for g in self.gpus],
            "training_pids": list(self.training_pids),
            "training_gpu_memory_bytes": self.training_gpu_memory_bytes,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GpuSnapshot":
        return cls(
            time=float(d["time"]),
            state=str(d["state"]),
            reason=d.get("reason"),
            gpus=tuple(GpuInfo.from_json(g) for g in d.get("gpus", ())),
            training_pids=tuple(int(p) for p in d.get("training_pids", ())),
        )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


class GpuSampler(BackgroundSampler[GpuSnapshot]):
    """Samples every GPU through an :class:`NvmlBoundary`; see the module docstring.

    ``training_pids`` is called at each sample for the pids of the training's process
    tree (``ProcessTreeSampler.pids``); without it no process counts as the training's.
    """

    thread_name = "cachewatch-gpu"

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        history_len: int = DEFAULT_HISTORY_LEN,
        nvml: NvmlBoundary | None = None,
        training_pids: Callable[[], Iterable[int]] | None = None,
        enabled: bool = True,
        retry_s: float = 30.0,
    ) -> None:
        super().__init__(interval_s=interval_s, history_len=history_len)
        if not (isinstance(retry_s, (int, float)) and retry_s >= 0):
            raise MonitorError(f"retry_s {retry_s!r} must be a number of seconds, 0 or more")
        self._nvml = nvml if nvml is not None else NvmlBoundary()
        self.training_pids = training_pids
        self.enabled = enabled
        self.retry_s = float(retry_s)
        self._start: NvmlStart | None = None
        self._failed_at = 0.0  # monotonic time NVML last failed to open or was dropped
        self._handles: dict[int, Any] = {}
        self._names: dict[int, str] = {}

    # --- NVML life cycle ------------------------------------------------------------------------

    def _not_now(self, state: str, reason: str | None, now: float) -> GpuSnapshot:
        return GpuSnapshot(now, state, reason)

    def _drop_nvml(self, state: str, reason: str) -> None:
        self._nvml.close()
        self._handles.clear()
        self._start = NvmlStart(state, reason, 0)
        self._failed_at = time.monotonic()

    def _close(self) -> None:
        self._nvml.close()
        self._handles.clear()

    # --- one sample -----------------------------------------------------------------------------

    def _take(self) -> GpuSnapshot:
        now = time.time()
        if not self.enabled:
            return self._not_now(STATE_DISABLED, "GPU sampling is off ([monitor] gpu = false)", now)
        if not self._nvml.is_open:
            if self._start is not None and time.monotonic() - self._failed_at < self.retry_s:
                return self._not_now(self._start.state, self._start.reason, now)
            self._start = self._nvml.open()
            if not self._nvml.is_open:
                self._failed_at = time.monotonic()
                return self._not_now(self._start.state, self._start.reason, now)
        count = self._nvml.device_count()
        if isinstance(count, NotAvailable):
            state = STATE_NO_DRIVER if count.code == "NVML_ERROR_DRIVER_NOT_LOADED" else STATE_ERROR
            self._drop_nvml(state, f"cannot count GPUs: {count.reason}")
            return self._not_now(state, f"cannot count GPUs: {count.reason}", now)
        if count == 0:
            return self._not_now(STATE_NO_GPU, "NVML reports no NVIDIA GPU", now)
        pids = self._current_training_pids()
        gpus: list[GpuInfo] = []
        driver_failure: NotAvailable | None = None
        for index in range(count):
            info, failure = self._read_gpu(index, pids)
            gpus.append(info)
            if failure is not None:
                driver_failure = failure
                break
        if driver_failure is not None:
            self._drop_nvml(STATE_ERROR, driver_failure.reason)
            return GpuSnapshot(now, STATE_ERROR, driver_failure.reason, tuple(gpus), tuple(sorted(pids)))
        return GpuSnapshot(now, STATE_OK, None, tuple(gpus), tuple(sorted(pids)))

    def _current_training_pids(self) -> frozenset[int]:
        if self.training_pids is None:
            return frozenset()
        try:
            return frozenset(int(p) for p in self.training_pids())
        except Exception:  # the tree sampler's problem must not blank the GPU panel
            return frozenset()

    def _read_gpu(self, index: int, pids: frozenset[int]) -> tuple[GpuInfo, NotAvailable | None]:
        """Read one GPU; the second value is set when the driver itself failed and NVML must be reopened."""
        nvml = self._nvml
        missing: list[MissingFigure] = []
        handle = self._handles.get(index)
        if handle is None:
            handle = nvml.handle(index)
            if isinstance(handle, NotAvailable):
                info = GpuInfo(index, self._names.get(index), None, None, None, None, None, None,
                               lost=handle.scope != SCOPE_FIGURE, missing=(MissingFigure("device", handle.reason),))
                return info, handle if handle.scope == SCOPE_DRIVER else None
            self._handles[index] = handle

        values: dict[str, Any] = {}
        fatal: NotAvailable | None = None
        readers: tuple[tuple[str, Callable[[Any], Any]], ...] = (
            ("name", nvml.name),
            ("utilization_percent", nvml.utilization_percent),
            ("memory", nvml.memory),
            ("temperature_c", nvml.temperature_c),
            ("power_w", nvml.power_w),
            ("power_limit_w", nvml.power_limit_w),
            ("processes", nvml.processes),
        )
        for figure, read in readers:
            if figure == "name" and index in self._names:
                values["name"] = self._names[index]
                continue
            if fatal is not None:  # a lost GPU answers every call with the same failure, maybe slowly: stop asking
                missing.append(MissingFigure(figure, fatal.reason))
                continue
            value = read(handle)
            if isinstance(value, NotAvailable):
                missing.append(MissingFigure(figure, value.reason))
                if value.scope != SCOPE_FIGURE:
                    fatal = value
                continue
            values[figure] = value
        if fatal is not None:
            self._handles.pop(index, None)  # a reset GPU comes back with a new handle
        if "name" in values:
            self._names[index] = values["name"]
        used, total = values.get("memory", (None, None))
        processes = tuple(
            GpuProcess(p.pid, p.used_gpu_memory_bytes, p.pid in pids) for p in values.get("processes", ())
        )
        info = GpuInfo(
            index=index,
            name=values.get("name"),
            utilization_percent=values.get("utilization_percent"),
            memory_used_bytes=used,
            memory_total_bytes=total,
            temperature_c=values.get("temperature_c"),
            power_w=values.get("power_w"),
            power_limit_w=values.get("power_limit_w"),
            processes=processes,
            lost=fatal is not None,
            missing=tuple(missing),
        )
        return info, fatal if fatal is not None and fatal.scope == SCOPE_DRIVER else None

    # --- history for sparklines -----------------------------------------------------------------

    def series(self, index: int, figure: str, n: int | None = None) -> tuple[float | None, ...]:
        """One figure of GPU ``index`` over the kept history, oldest first; None where it was missing."""
        if figure not in GPU_FIGURES:
            raise MonitorError(f"figure {figure!r} is not a GPU figure; use one of {', '.join(GPU_FIGURES)}")
        out: list[float | None] = []
        for snap in self.history(n):
            gpu = next((g for g in snap.gpus if g.index == index), None)
            value = None if gpu is None else getattr(gpu, figure)
            out.append(None if value is None or (isinstance(value, float) and math.isnan(value)) else value)
        return tuple(out)
