"""The one place that talks to NVML (``nvidia-ml-py``, imported as ``pynvml``).

Every call the monitor makes goes through :class:`NvmlBoundary`, which turns each way
NVML can fail into a value instead of an exception: a missing package, a missing
library or driver, zero devices, a figure this GPU does not support, a GPU that fell off
the bus. A figure that cannot be read is a :class:`NotAvailable` carrying the reason
and its *scope* (this figure only, the whole device, or the whole driver), in the
spirit of nvitop's ``NA`` values. "No GPU" is a normal state, never a crash.

Only NVML is loaded: nothing here creates a CUDA context or imports a framework, so
sampling never takes GPU memory from the training.

Tests replace the ``pynvml`` module with a fake through the ``load`` argument; the fake
raises pynvml's own exception classes, so the translation below runs the same code
path against the fake and against a real driver.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = [
    "NvmlBoundary",
    "NvmlStart",
    "NvmlProcessUse",
    "NotAvailable",
    "load_pynvml",
    "SCOPE_FIGURE",
    "SCOPE_DEVICE",
    "SCOPE_DRIVER",
    "STATE_OK",
    "STATE_NO_LIBRARY",
    "STATE_NO_DRIVER",
    "STATE_NO_GPU",
    "STATE_ERROR",
    "STATE_DISABLED",
]

# Why a figure is missing: only this figure, this whole GPU (lost), or NVML itself (driver gone).
SCOPE_FIGURE = "figure"
SCOPE_DEVICE = "device"
SCOPE_DRIVER = "driver"

# The GPU states a snapshot can be in; every state but "ok" comes with a reason.
STATE_OK = "ok"
STATE_NO_LIBRARY = "no_library"  # nvidia-ml-py not installed, or libnvidia-ml.so not found
STATE_NO_DRIVER = "no_driver"  # library present, kernel driver not loaded or mismatched
STATE_NO_GPU = "no_gpu"  # NVML works and reports zero devices
STATE_ERROR = "error"  # any other NVML failure at start-up or while sampling
STATE_DISABLED = "disabled"  # [monitor] gpu = false

_ULLONG_MAX = 2**64 - 1  # NVML_VALUE_NOT_AVAILABLE for unsigned long long figures
_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU: the die sensor


@dataclass(frozen=True)
class NotAvailable:
    """A figure NVML did not give, and why. Falsy, so ``value or default`` reads naturally."""

    reason: str
    scope: str = SCOPE_FIGURE
    code: str | None = None  # the NVML error name (NVML_ERROR_NOT_SUPPORTED...) when NVML gave one

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class NvmlStart:
    """The outcome of :meth:`NvmlBoundary.open`."""

    state: str
    reason: str | None
    device_count: int

    @property
    def available(self) -> bool:
        return self.state == STATE_OK


@dataclass(frozen=True)
class NvmlProcessUse:
    """A process with a context on a GPU. ``used_gpu_memory_bytes`` is None where NVML cannot tell (WDDM, some vGPUs)."""

    pid: int
    used_gpu_memory_bytes: int | None


def load_pynvml() -> ModuleType:
    """Import the official binding; raises ImportError when it is not installed."""
    return importlib.import_module("pynvml")


# NVML return codes, by name, so a fake module and the real one are read the same way.
_CODE_NAMES = {
    "NVML_ERROR_UNINITIALIZED": 1,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
    "NVML_ERROR_GPU_IS_LOST": 15,
    "NVML_ERROR_RESET_REQUIRED": 16,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": 18,
    "NVML_ERROR_UNKNOWN": 999,
}

_REASONS: dict[str, tuple[str, str]] = {
    # name: (scope, reason)
    "NVML_ERROR_UNINITIALIZED": (SCOPE_DRIVER, "NVML is not initialised"),
    "NVML_ERROR_NOT_SUPPORTED": (SCOPE_FIGURE, "not supported by this GPU or driver"),
    "NVML_ERROR_NO_PERMISSION": (SCOPE_FIGURE, "no permission to read it (NVML_ERROR_NO_PERMISSION)"),
    "NVML_ERROR_NOT_FOUND": (SCOPE_DEVICE, "the GPU was not found (NVML_ERROR_NOT_FOUND)"),
    "NVML_ERROR_DRIVER_NOT_LOADED": (SCOPE_DRIVER, "the NVIDIA kernel driver is not loaded"),
    "NVML_ERROR_LIBRARY_NOT_FOUND": (SCOPE_DRIVER, "the NVML library (libnvidia-ml.so.1) was not found: no NVIDIA driver is installed"),
    "NVML_ERROR_FUNCTION_NOT_FOUND": (SCOPE_FIGURE, "this driver version does not provide it"),
    "NVML_ERROR_GPU_IS_LOST": (SCOPE_DEVICE, "the GPU has fallen off the bus (GPU is lost); see dmesg, it needs a reset or a reboot"),
    "NVML_ERROR_RESET_REQUIRED": (SCOPE_DEVICE, "the GPU needs a reset"),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (
        SCOPE_DRIVER,
        "the NVIDIA driver and library versions differ (driver upgraded without reloading it); reboot",
    ),
}


class NvmlBoundary:
    """The NVML calls the monitor uses, each returning a value or a :class:`NotAvailable`.

    Not thread-safe on purpose: one sampler thread owns one boundary.
    """

    def __init__(self, load: Callable[[], ModuleType] = load_pynvml) -> None:
        self._load = load
        self._lib: Any = None
        self._open = False
        self._use_temperature_v = True

    @property
    def is_open(self) -> bool:
        return self._open

    # --- error translation ----------------------------------------------------------------------

    def _code(self, name: str) -> int:
        return int(getattr(self._lib, name, _CODE_NAMES[name]))

    def _translate(self, exc: BaseException) -> NotAvailable:
        base = getattr(self._lib, "NVMLError", None)
        if base is not None and isinstance(exc, base):
            value = getattr(exc, "value", None)
            for name, (scope, reason) in _REASONS.items():
                if value == self._code(name):
                    return NotAvailable(reason, scope, name)
            return NotAvailable(f"NVML error: {exc}", SCOPE_FIGURE, f"NVML_ERROR_{value}")
        # Not an NVMLError: a broken binding or a decoding problem. Still a value, never a crash.
        return NotAvailable(f"NVML call failed: {type(exc).__name__}: {exc}", SCOPE_FIGURE)

    def _call(self, fn_name: str, *args: Any) -> Any:
        if not self._open:
            return NotAvailable("NVML is not open", SCOPE_DRIVER)
        try:
            return getattr(self._lib, fn_name)(*args)
        except AttributeError as exc:
            return NotAvailable(
                f"the installed pynvml has no {fn_name}; install nvidia-ml-py ({exc})", SCOPE_FIGURE, "NVML_ERROR_FUNCTION_NOT_FOUND"
            )
        except Exception as exc:
            return self._translate(exc)

    # --- start and stop -------------------------------------------------------------------------

    def open(self) -> NvmlStart:
        """nvmlInit and nvmlDeviceGetCount; the state says whether there is anything to sample."""
        if self._open:
            count = self.device_count()
            if isinstance(count, NotAvailable):
                return NvmlStart(STATE_ERROR, count.reason, 0)
            return NvmlStart(STATE_OK if count else STATE_NO_GPU, None if count else "NVML reports no NVIDIA GPU", count)
        try:
            self._lib = self._load()
        except ImportError as exc:
            return NvmlStart(STATE_NO_LIBRARY, f"nvidia-ml-py is not installed ({exc}); pip install nvidia-ml-py", 0)
        except Exception as exc:
            return NvmlStart(STATE_NO_LIBRARY, f"the pynvml module cannot be loaded: {type(exc).__name__}: {exc}", 0)
        try:
            self._lib.nvmlInit()
        except Exception as exc:
            na = self._translate(exc)
            base = getattr(self._lib, "NVMLError", None)
            value = getattr(exc, "value", None) if base is not None and isinstance(exc, base) else None
            if value == self._code("NVML_ERROR_LIBRARY_NOT_FOUND"):
                state = STATE_NO_LIBRARY
            elif value in (self._code("NVML_ERROR_DRIVER_NOT_LOADED"), self._code("NVML_ERROR_LIB_RM_VERSION_MISMATCH")):
                state = STATE_NO_DRIVER
            else:
                state = STATE_ERROR
            return NvmlStart(state, na.reason, 0)
        self._open = True
        count = self.device_count()
        if isinstance(count, NotAvailable):
            self.close()
            return NvmlStart(STATE_ERROR, f"cannot count GPUs: {count.reason}", 0)
        if count == 0:
            return NvmlStart(STATE_NO_GPU, "NVML reports no NVIDIA GPU", 0)
        return NvmlStart(STATE_OK, None, count)

    def close(self) -> None:
        """nvmlShutdown, once per successful open. Errors are ignored: the process may be exiting."""
        if not self._open:
            return
        self._open = False
        try:
            self._lib.nvmlShutdown()
        except Exception:
            pass

    # --- the figures ----------------------------------------------------------------------------

    def device_count(self) -> int | NotAvailable:
        return self._call("nvmlDeviceGetCount")

    def handle(self, index: int) -> Any:
        """An opaque device handle, or NotAvailable."""
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def name(self, handle: Any) -> str | NotAvailable:
        value = self._call("nvmlDeviceGetName", handle)
        if isinstance(value, bytes):  # older bindings return bytes
            value = value.decode("utf-8", errors="replace")
        return value

    def utilization_percent(self, handle: Any) -> int | NotAvailable:
        """Percent of the last sample period during which a kernel ran (nvidia-smi's GPU-Util)."""
        rates = self._call("nvmlDeviceGetUtilizationRates", handle)
        return rates if isinstance(rates, NotAvailable) else int(rates.gpu)

    def memory(self, handle: Any) -> tuple[int, int] | NotAvailable:
        """(used_bytes, total_bytes) of device memory."""
        info = self._call("nvmlDeviceGetMemoryInfo", handle)
        return info if isinstance(info, NotAvailable) else (int(info.used), int(info.total))

    def temperature_c(self, handle: Any) -> int | NotAvailable:
        # nvmlDeviceGetTemperature is deprecated for the V form; drivers older than it only have the old one.
        if self._use_temperature_v:
            value = self._call("nvmlDeviceGetTemperatureV", handle, _TEMPERATURE_GPU)
            if not (isinstance(value, NotAvailable) and value.code == "NVML_ERROR_FUNCTION_NOT_FOUND"):
                return value if isinstance(value, NotAvailable) else int(value)
            self._use_temperature_v = False
        value = self._call("nvmlDeviceGetTemperature", handle, _TEMPERATURE_GPU)
        return value if isinstance(value, NotAvailable) else int(value)

    def power_w(self, handle: Any) -> float | NotAvailable:
        value = self._call("nvmlDeviceGetPowerUsage", handle)  # milliwatts
        return value if isinstance(value, NotAvailable) else value / 1000.0

    def power_limit_w(self, handle: Any) -> float | NotAvailable:
        value = self._call("nvmlDeviceGetEnforcedPowerLimit", handle)  # milliwatts
        return value if isinstance(value, NotAvailable) else value / 1000.0

    def processes(self, handle: Any) -> tuple[NvmlProcessUse, ...] | NotAvailable:
        """Compute and graphics processes on the device, one entry per pid.

        A process in both lists has one memory figure in NVML (its whole use of the device),
        so the larger of the two is kept rather than the sum.
        """
        merged: dict[int, int | None] = {}
        failures: list[NotAvailable] = []
        for fn_name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            found = self._call(fn_name, handle)
            if isinstance(found, NotAvailable):
                failures.append(found)
                continue
            for proc in found:
                used = getattr(proc, "usedGpuMemory", None)
                used = None if used is None or used >= _ULLONG_MAX else int(used)
                pid = int(proc.pid)
                if pid in merged and merged[pid] is not None and (used is None or merged[pid] >= used):  # type: ignore[operator]
                    continue
                merged[pid] = used
        if len(failures) == 2:
            worst = next((f for f in failures if f.scope != SCOPE_FIGURE), failures[0])
            return worst
        return tuple(NvmlProcessUse(pid, used) for pid, used in sorted(merged.items()))
