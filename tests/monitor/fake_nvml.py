"""A stand-in for the ``pynvml`` module, for the machines without an NVIDIA GPU.

It is the one fake the project allows, and it sits exactly at the NVML boundary: it has
the same function names as ``pynvml`` and raises pynvml's own exception classes (they
work without a driver), so :class:`NvmlBoundary` runs the same code against it as
against a real driver. It records every call, and refuses calls made before ``nvmlInit``
or after ``nvmlShutdown`` the way NVML does (``NVML_ERROR_UNINITIALIZED``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GiB = 1024**3
MiB = 1024**2


@dataclass
class FakeGpu:
    name: str = "NVIDIA GeForce RTX 3050 Ti Laptop GPU"
    utilization_percent: int = 31
    memory_used_bytes: int = int(3.8 * GiB)
    memory_total_bytes: int = 4 * GiB
    temperature_c: int = 67
    power_mw: int = 35_000
    power_limit_mw: int = 60_000
    compute: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, usedGpuMemory or None)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # NVML function name -> error code it raises
    lost: bool = False  # every call on this GPU raises NVML_ERROR_GPU_IS_LOST


class FakeNvml:
    """Looks like the ``pynvml`` module to :class:`NvmlBoundary`."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None, has_temperature_v: bool = True) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error
        self.driver_error: int | None = None  # set to make every call fail as if the driver went away
        self.initialized = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: list[tuple[str, Any]] = []
        self.calls_after_shutdown: list[str] = []
        if not has_temperature_v:
            self.failures_global = {"nvmlDeviceGetTemperatureV": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
        else:
            self.failures_global = {}

    def __getattr__(self, name: str) -> Any:
        # Constants (NVML_ERROR_*, NVML_TEMPERATURE_GPU...) are the real module's.
        if name.startswith("NVML"):
            return getattr(pynvml, name)
        raise AttributeError(name)

    # --- life cycle -----------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_calls += 1
        self.calls.append(("nvmlInit", None))
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.calls.append(("nvmlShutdown", None))
        if self.initialized <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self.shutdown_calls += 1
        self.initialized -= 1

    def _ready(self, fn: str) -> None:
        if self.initialized <= 0:
            if self.shutdown_calls:
                self.calls_after_shutdown.append(fn)
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if self.driver_error is not None:
            raise pynvml.NVMLError(self.driver_error)

    def _gpu(self, fn: str, handle: Any) -> FakeGpu:
        self.calls.append((fn, handle[1]))
        self._ready(fn)
        gpu = self.gpus[handle[1]]
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        code = gpu.failures.get(fn, self.failures_global.get(fn))
        if code is not None:
            raise pynvml.NVMLError(code)
        return gpu

    # --- the calls NvmlBoundary makes -----------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self.calls.append(("nvmlDeviceGetCount", None))
        self._ready("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        self.calls.append(("nvmlDeviceGetHandleByIndex", index))
        self._ready("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        g = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=g.utilization_percent, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        g = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(total=g.memory_total_bytes, used=g.memory_used_bytes, free=g.memory_total_bytes - g.memory_used_bytes)

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu("nvmlDeviceGetTemperatureV", handle).temperature_c

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu("nvmlDeviceGetTemperature", handle).temperature_c

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        g = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in g.compute]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        g = self._gpu("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in g.graphics]

    def device_calls(self, index: int) -> list[str]:
        return [fn for fn, arg in self.calls if arg == index and fn.startswith("nvmlDevice")]
