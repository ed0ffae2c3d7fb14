"""Sampling of the machine: GPUs through NVML, the training process tree, memory and disk.

Nothing here imports torch or creates a CUDA context: NVML alone is loaded.
"""

from .errors import MonitorError
from .gpu import GPU_FIGURES, GpuInfo, GpuProcess, GpuSampler, GpuSnapshot, MissingFigure
from .host import (
    ALERT_DISK,
    ALERT_MEMORY,
    DiskFigures,
    HostAlert,
    HostSampler,
    HostSnapshot,
    MemoryFigures,
    SwapFigures,
    read_disk,
)
from .monitor import Monitor, MonitorSnapshot
from .nvml import (
    STATE_DISABLED,
    STATE_ERROR,
    STATE_NO_DRIVER,
    STATE_NO_GPU,
    STATE_NO_LIBRARY,
    STATE_OK,
    NotAvailable,
    NvmlBoundary,
    NvmlProcessUse,
    NvmlStart,
)
from .process_tree import ROLE_CHILD, ROLE_ROOT, ROLE_WORKER, ProcessInfo, ProcessTreeSampler, TreeSnapshot
from .sampler import BackgroundSampler
from .workers import WORKER_PROCESS_NAME, find_workers

__all__ = [
    "MonitorError",
    "Monitor",
    "MonitorSnapshot",
    "BackgroundSampler",
    # GPU
    "GpuSampler",
    "GpuSnapshot",
    "GpuInfo",
    "GpuProcess",
    "MissingFigure",
    "GPU_FIGURES",
    "NvmlBoundary",
    "NvmlStart",
    "NvmlProcessUse",
    "NotAvailable",
    "STATE_OK",
    "STATE_NO_LIBRARY",
    "STATE_NO_DRIVER",
    "STATE_NO_GPU",
    "STATE_ERROR",
    "STATE_DISABLED",
    # process tree and workers
    "ProcessTreeSampler",
    "TreeSnapshot",
    "ProcessInfo",
    "ROLE_ROOT",
    "ROLE_WORKER",
    "ROLE_CHILD",
    "WORKER_PROCESS_NAME",
    "find_workers",
    # host
    "HostSampler",
    "HostSnapshot",
    "MemoryFigures",
    "SwapFigures",
    "DiskFigures",
    "HostAlert",
    "ALERT_MEMORY",
    "ALERT_DISK",
    "read_disk",
]
