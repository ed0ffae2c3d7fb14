"""The three samplers wired together, as the headless engine and the dashboard run them.

The GPU sampler attributes GPU memory to the pids of the process tree sampler's last
snapshot, so the training's own share needs no second walk of the tree. Each sampler
has its own thread: a GPU call stuck on a failing driver never delays the host figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import Config
from .gpu import GpuSampler, GpuSnapshot
from .host import DEFAULT_DISK_ALERT, DEFAULT_MEMORY_ALERT, HostSampler, HostSnapshot
from .nvml import NvmlBoundary
from .process_tree import ProcessTreeSampler, TreeSnapshot
from .sampler import DEFAULT_HISTORY_LEN

__all__ = ["Monitor", "MonitorSnapshot"]


@dataclass(frozen=True)
class MonitorSnapshot:
    """The latest of each sampler; a part is None before its first sample."""

    host: HostSnapshot | None
    tree: TreeSnapshot | None
    gpu: GpuSnapshot | None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": None if self.host is None else self.host.to_json(),
            "tree": None if self.tree is None else self.tree.to_json(),
            "gpu": None if self.gpu is None else self.gpu.to_json(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "MonitorSnapshot":
        return cls(
            host=None if d.get("host") is None else HostSnapshot.from_json(d["host"]),
            tree=None if d.get("tree") is None else TreeSnapshot.from_json(d["tree"]),
            gpu=None if d.get("gpu") is None else GpuSnapshot.from_json(d["gpu"]),
        )


class Monitor:
    """Host, process tree and GPU samplers sharing one interval; ``start()`` / ``stop()`` / ``snapshot()``."""

    def __init__(
        self,
        *,
        disk_path: str | os.PathLike[str] | None = None,
        root_pid: int | None = None,
        interval_s: float = 1.0,
        memory_alert: float = DEFAULT_MEMORY_ALERT,
        disk_alert: float = DEFAULT_DISK_ALERT,
        gpu: bool = True,
        history_len: int = DEFAULT_HISTORY_LEN,
        nvml: NvmlBoundary | None = None,
    ) -> None:
        self.host = HostSampler(disk_path, memory_alert=memory_alert, disk_alert=disk_alert,
                                interval_s=interval_s, history_len=history_len)
        self.tree = ProcessTreeSampler(root_pid, interval_s=interval_s, history_len=history_len)
        self.gpu = GpuSampler(interval_s=interval_s, history_len=history_len, nvml=nvml,
                              training_pids=self.tree.pids, enabled=gpu)

    @classmethod
    def from_config(cls, config: Config, *, root_pid: int | None = None, nvml: NvmlBoundary | None = None) -> "Monitor":
        """``[monitor]`` interval, memory_alert, disk_alert and gpu; the disk watched is ``[cache] root``."""
        m = config.monitor
        return cls(disk_path=config.cache.root, root_pid=root_pid, interval_s=m.interval,
                   memory_alert=m.memory_alert, disk_alert=m.disk_alert, gpu=m.gpu, nvml=nvml)

    def set_root_pid(self, pid: int | None) -> None:
        """Follow the training's new root process (after a restart), or none."""
        self.tree.set_root(pid)

    def start(self) -> "Monitor":
        # The tree first, so the GPU sampler's first attribution already has pids to use.
        self.tree.start()
        self.host.start()
        self.gpu.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for sampler in (self.gpu, self.host, self.tree):
            sampler.stop(timeout)

    def sample(self) -> MonitorSnapshot:
        """Sample all three now on the calling thread (for one-shot use without threads)."""
        tree = self.tree.sample()
        return MonitorSnapshot(self.host.sample(), tree, self.gpu.sample())

    def snapshot(self) -> MonitorSnapshot:
        """The latest snapshot of each sampler; never blocks on a sample in progress."""
        return MonitorSnapshot(self.host.latest(), self.tree.latest(), self.gpu.latest())

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
