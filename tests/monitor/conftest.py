"""Fixtures for the monitor tests: which NVML backends to run, and real process trees.

GPU tests run against the fake NVML everywhere and, where a real NVIDIA GPU answers
(pynvml initialises and counts at least one device), against the real library too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from cachewatch.engine.monitor import NvmlBoundary

from .fake_nvml import GiB, FakeGpu, FakeNvml, MiB


def _real_gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


REAL_GPU = _real_gpu_present()
BACKENDS = ["fake"] + (["real"] if REAL_GPU else [])

# The fake machine of the shared tests: two GPUs, processes on both (seed 000's laptop GPU and a bigger one).
UNRELATED_PID = 1  # init is never part of a training tree


def two_gpu_fake(training_pid: int | None = None, training_bytes: int = 512 * MiB) -> FakeNvml:
    gpu0 = FakeGpu(compute=[(UNRELATED_PID, 1 * GiB)])
    gpu1 = FakeGpu(
        name="NVIDIA RTX A6000", utilization_percent=87, memory_used_bytes=20 * GiB, memory_total_bytes=48 * GiB,
        temperature_c=71, power_mw=250_000, power_limit_mw=300_000,
        compute=[(UNRELATED_PID, 2 * GiB)] + ([(training_pid, training_bytes)] if training_pid else []),
        graphics=[(UNRELATED_PID, 2 * GiB)],
    )
    return FakeNvml([gpu0, gpu1])


def boundary_for(backend: str, fake: FakeNvml | None = None) -> NvmlBoundary:
    if backend == "real":
        return NvmlBoundary()
    fake = fake if fake is not None else two_gpu_fake()
    return NvmlBoundary(load=lambda: fake)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Trees:
    """Starts real Python process trees in their own process group and ends them after the test."""

    def __init__(self, scripts: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.scripts = scripts

    def start(self, code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        if env:
            full_env.update(env)
        # A file, not -c: spawn and forkserver children import the main module by path.
        script = self.scripts / f"tree_{len(self.procs)}.py"
        script.write_text(textwrap.dedent(code))
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=full_env,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def read_line(proc: subprocess.Popen, prefix: str) -> list[str]:
        """The words after ``prefix`` on the first stdout line that starts with it."""
        while True:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"process {proc.pid} exited (rc={proc.poll()}) before printing {prefix!r}")
            if line.startswith(prefix):
                return line.split()[1:]

    def close(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group of this tree only: its session was made for it
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except Exception:
                    pass


@pytest.fixture
def trees(tmp_path: Path) -> Iterator[Trees]:
    t = Trees(tmp_path)
    try:
        yield t
    finally:
        t.close()
