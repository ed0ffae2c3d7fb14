"""The GPU sampler: the same invariants against the fake NVML and, where one answers, a real GPU;
then the failure cases only a fake can stage (no library, no driver, no GPU, a GPU lost mid-run)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pynvml
import pytest

from cachewatch.engine.monitor import (
    STATE_DISABLED,
    STATE_ERROR,
    STATE_NO_DRIVER,
    STATE_NO_GPU,
    STATE_NO_LIBRARY,
    STATE_OK,
    GpuSampler,
    GpuSnapshot,
    MonitorError,
    NvmlBoundary,
    ProcessTreeSampler,
)

from tests.support.helpers import wait_for
from .conftest import REAL_GPU, UNRELATED_PID, Trees, boundary_for, two_gpu_fake
from .fake_nvml import GiB, MiB, FakeGpu, FakeNvml

REPO = Path(__file__).resolve().parents[2]


def _check_invariants(snap: GpuSnapshot) -> None:
    assert snap.state == STATE_OK and snap.reason is None and snap.available
    assert len(snap.gpus) >= 1
    for position, gpu in enumerate(snap.gpus):
        assert gpu.index == position
        assert isinstance(gpu.name, str) and gpu.name
        assert not gpu.lost
        if gpu.utilization_percent is not None:
            assert 0 <= gpu.utilization_percent <= 100
        assert gpu.memory_total_bytes is not None and gpu.memory_total_bytes > 0
        assert gpu.memory_used_bytes is not None and 0 <= gpu.memory_used_bytes <= gpu.memory_total_bytes
        assert 0.0 <= gpu.memory_used_fraction <= 1.0
        if gpu.temperature_c is not None:
            assert 0 <= gpu.temperature_c < 130
        if gpu.power_w is not None:
            assert gpu.power_w >= 0
        if gpu.power_limit_w is not None:
            assert gpu.power_limit_w > 0
        # every figure is either there or explained
        for figure in ("utilization_percent", "temperature_c", "power_w", "power_limit_w"):
            if getattr(gpu, figure) is None:
                assert any(m.figure == figure and m.reason for m in gpu.missing)
        pids = [p.pid for p in gpu.processes]
        assert len(pids) == len(set(pids)) and all(pid > 0 for pid in pids)
        for p in gpu.processes:
            assert p.used_gpu_memory_bytes is None or 0 <= p.used_gpu_memory_bytes <= gpu.memory_total_bytes


# --- the same tests on every backend ----------------------------------------------------------------


def test_snapshot_invariants(backend: str) -> None:
    sampler = GpuSampler(nvml=boundary_for(backend))
    try:
        snap = sampler.sample()
        _check_invariants(snap)
        if backend == "fake":
            assert [g.name for g in snap.gpus] == ["NVIDIA GeForce RTX 3050 Ti Laptop GPU", "NVIDIA RTX A6000"]
            g0, g1 = snap.gpus
            assert (g0.utilization_percent, g0.memory_used_bytes, g0.memory_total_bytes) == (31, int(3.8 * GiB), 4 * GiB)
            assert (g1.temperature_c, g1.power_w, g1.power_limit_w) == (71, 250.0, 300.0)
            # pid 1 is in both of GPU 1's lists with one figure: counted once
            assert [(p.pid, p.used_gpu_memory_bytes) for p in g1.processes] == [(UNRELATED_PID, 2 * GiB)]
        assert GpuSnapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap
    finally:
        sampler.stop()


CUDA_CHILD = textwrap.dedent(
    """
    import ctypes, os, sys, time
    if sys.argv[1] == "real":
        # The CUDA driver API straight from libcuda: a context and 64 MiB, with no framework.
        cuda = ctypes.CDLL("libcuda.so.1")
        def check(rc, what):
            if rc != 0:
                sys.exit(f"{what} failed with CUDA error {rc}")
        check(cuda.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
        ctx = ctypes.c_void_p()
        check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
        check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        ptr = ctypes.c_uint64()
        check(cuda.cuMemAlloc_v2(ctypes.byref(ptr), 64 << 20), "cuMemAlloc")
    print("ready", os.getpid(), flush=True)
    time.sleep(300)
    """
)

TRAINING_ROOT = """
import subprocess, sys
# The training's root starts the process that uses the GPU, so the attribution has to walk the tree.
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
sys.stdin.read()
child.kill()
"""


def test_gpu_memory_is_attributed_to_the_training_tree(backend: str, trees: Trees) -> None:
    root = trees.start(TRAINING_ROOT, CUDA_CHILD, backend)
    (child_pid,) = map(int, trees.read_line(root, "ready"))
    tree = ProcessTreeSampler(root.pid)
    tree_snap = tree.sample()
    assert child_pid in tree_snap.pids and root.pid in tree_snap.pids
    fake = two_gpu_fake(training_pid=child_pid, training_bytes=512 * MiB) if backend == "fake" else None
    sampler = GpuSampler(nvml=boundary_for(backend, fake), training_pids=tree.pids)
    try:
        snap = sampler.sample()
        _check_invariants(snap)
        assert set(snap.training_pids) == set(tree_snap.pids)
        mine = [(g.index, p) for g in snap.gpus for p in g.processes if p.in_training]
        assert [p.pid for _, p in mine] == [child_pid]
        others = [p for g in snap.gpus for p in g.processes if not p.in_training]
        assert all(p.pid not in tree_snap.pids for p in others)
        if backend == "fake":
            assert snap.training_gpu_memory_bytes == 512 * MiB
            assert [g.training_memory_bytes for g in snap.gpus] == [0, 512 * MiB]
        else:
            assert snap.training_gpu_memory_bytes is not None and snap.training_gpu_memory_bytes >= 64 * MiB
    finally:
        sampler.stop()
        tree.stop()


def test_background_thread_publishes_keeps_history_and_stops(backend: str) -> None:
    fake = two_gpu_fake() if backend == "fake" else None
    boundary = boundary_for(backend, fake)
    sampler = GpuSampler(nvml=boundary, interval_s=0.05, history_len=5)
    seen: list[GpuSnapshot] = []
    sampler.subscribe(seen.append)
    sampler.start()
    try:
        wait_for(lambda: len(seen) >= 8, what="8 GPU samples")
    finally:
        sampler.stop()
    assert not sampler.running
    assert not boundary.is_open  # NVML shut down, after the thread stopped
    history = sampler.history()
    assert len(history) == 5  # bounded
    assert list(history) == seen[-5:]
    assert all(b.time >= a.time for a, b in zip(history, history[1:]))
    assert sampler.latest() is history[-1]
    _check_invariants(history[-1])
    util = sampler.series(0, "utilization_percent")
    assert len(util) == 5 and all(u is not None and 0 <= u <= 100 for u in util)
    with pytest.raises(MonitorError, match="stopped"):
        sampler.sample()
    if fake is not None:
        assert fake.shutdown_calls == 1 and fake.initialized == 0
        assert fake.calls_after_shutdown == []


NO_TORCH_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from cachewatch.engine.monitor import GpuSampler, Monitor, NvmlBoundary
if sys.argv[2] == "fake":
    from tests.monitor.conftest import two_gpu_fake
    fake = two_gpu_fake()
    nvml = NvmlBoundary(load=lambda: fake)
else:
    nvml = NvmlBoundary()
sampler = GpuSampler(nvml=nvml, interval_s=0.01)
first = sampler.sample()
sampler.start()
import time
time.sleep(0.2)
sampler.stop()
with Monitor(disk_path=".", root_pid=None, gpu=True) as m:
    m.sample()
maps = open("/proc/self/maps").read()
print(json.dumps({
    "state": first.state,
    "torch": sorted(n for n in sys.modules if n == "torch" or n.startswith("torch.")),
    "libcuda": "libcuda.so" in maps,
    "nvml_loaded": "libnvidia-ml" in maps,
}))
"""


def test_gpu_sampling_never_imports_torch_nor_loads_cuda(backend: str) -> None:
    import importlib.util

    assert importlib.util.find_spec("torch") is not None  # torch is importable, so an import would show
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(REPO), backend], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] == []
    assert result["libcuda"] is False  # NVML only: no CUDA context is ever created by the engine
    assert result["state"] == STATE_OK
    assert result["nvml_loaded"] is (backend == "real")


# --- the real library on this machine, whatever it has ---------------------------------------------


def test_the_real_library_never_raises_whatever_the_machine() -> None:
    sampler = GpuSampler()  # the real pynvml
    try:
        snap = sampler.sample()
    finally:
        sampler.stop()
    if REAL_GPU:
        _check_invariants(snap)
    else:
        assert snap.state in (STATE_NO_LIBRARY, STATE_NO_DRIVER, STATE_NO_GPU, STATE_ERROR)
        assert snap.reason and snap.gpus == () and not snap.available
        assert snap.training_gpu_memory_bytes is None


# --- what only a fake can stage -----------------------------------------------------------------------


def test_no_nvidia_ml_py_installed_is_a_state_and_is_retried() -> None:
    loads = []

    def missing():
        loads.append(1)
        raise ImportError("No module named 'pynvml'")

    sampler = GpuSampler(nvml=NvmlBoundary(load=missing), retry_s=3600)
    snap = sampler.sample()
    assert snap.state == STATE_NO_LIBRARY and "nvidia-ml-py" in snap.reason and snap.gpus == ()
    sampler.sample()
    assert len(loads) == 1  # not retried before retry_s
    sampler.retry_s = 0
    sampler.sample()
    assert len(loads) == 2
    sampler.stop()


def test_library_without_driver() -> None:
    fake = FakeNvml([FakeGpu()], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    snap = GpuSampler(nvml=NvmlBoundary(load=lambda: fake)).sample()
    assert snap.state == STATE_NO_LIBRARY and "libnvidia-ml" in snap.reason


def test_driver_not_loaded() -> None:
    fake = FakeNvml([FakeGpu()], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    sampler = GpuSampler(nvml=NvmlBoundary(load=lambda: fake))
    snap = sampler.sample()
    assert snap.state == STATE_NO_DRIVER and "driver is not loaded" in snap.reason
    sampler.stop()
    assert fake.shutdown_calls == 0  # never opened, never shut down


def test_driver_library_mismatch_says_reboot() -> None:
    fake = FakeNvml([FakeGpu()], init_error=pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    snap = GpuSampler(nvml=NvmlBoundary(load=lambda: fake)).sample()
    assert snap.state == STATE_NO_DRIVER and "reboot" in snap.reason


def test_zero_gpus() -> None:
    fake = FakeNvml([])
    sampler = GpuSampler(nvml=NvmlBoundary(load=lambda: fake))
    snap = sampler.sample()
    assert snap.state == STATE_NO_GPU and snap.reason and snap.gpus == ()
    assert snap.training_gpu_memory_bytes is None
    sampler.stop()
    assert fake.shutdown_calls == 1


def test_a_broken_binding_at_init_is_a_state() -> None:
    class Broken:
        NVMLError = pynvml.NVMLError

        def nvmlInit(self):
            raise AttributeError("module 'pynvml' has no attribute 'nvmlInitWithFlags'")

    snap = GpuSampler(nvml=NvmlBoundary(load=Broken)).sample()
    assert snap.state == STATE_ERROR and "nvmlInitWithFlags" in snap.reason


def test_gpu_lost_mid_sampling_marks_only_that_gpu() -> None:
    fake = two_gpu_fake()
    sampler = GpuSampler(nvml=NvmlBoundary(load=lambda: fake))
    assert sampler.sample().gpus[1].utilization_percent == 87
    fake.gpus[1].lost = True
    calls_before = len(fake.device_calls(1))
    snap = sampler.sample()
    assert snap.state == STATE_OK
    g0, g1 = snap.gpus
    assert not g0.lost and g0.utilization_percent == 31
    assert g1.lost and g1.name == "NVIDIA RTX A6000"  # the name known from before stays
    assert g1.utilization_percent is None and g1.memory_used_bytes is None and g1.processes == ()
    assert {m.figure for m in g1.missing} >= {"utilization_percent", "memory", "power_w", "processes"}
    assert all("fallen off the bus" in m.reason for m in g1.missing)
    assert len(fake.device_calls(1)) - calls_before == 1  # stopped asking a lost GPU after the first failure
    assert g1.training_memory_bytes is None
    # The GPU comes back (reset): a fresh handle is asked for and the figures return.
    fake.gpus[1].lost = False
    handles_before = fake.calls.count(("nvmlDeviceGetHandleByIndex", 1))
    back = sampler.sample().gpus[1]
    assert not back.lost and back.utilization_percent == 87
    assert fake.calls.count(("nvmlDeviceGetHandleByIndex", 1)) == handles_before + 1
    sampler.stop()


def test_power_not_supported_leaves_the_other_figures() -> None:
    fake = two_gpu_fake()
    fake.gpus[0].failures = {
        "nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetEnforcedPowerLimit": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetGraphicsRunningProcesses": pynvml.NVML_ERROR_NOT_SUPPORTED,
    }
    snap = GpuSampler(nvml=NvmlBoundary(load=lambda: fake)).sample()
    g0 = snap.gpus[0]
    assert not g0.lost and g0.power_w is None and g0.power_limit_w is None
    assert g0.utilization_percent == 31 and g0.temperature_c == 67
    assert [(m.figure, m.reason) for m in g0.missing] == [
        ("power_w", "not supported by this GPU or driver"),
        ("power_limit_w", "not supported by this GPU or driver"),
    ]
    # graphics processes unsupported, compute ones still read
    assert [p.pid for p in g0.processes] == [UNRELATED_PID]


def test_processes_unsupported_make_training_memory_unknown_not_zero() -> None:
    fake = two_gpu_fake()
    for gpu in fake.gpus:
        gpu.failures = {
            "nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
            "nvmlDeviceGetGraphicsRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
        }
    snap = GpuSampler(nvml=NvmlBoundary(load=lambda: fake), training_pids=lambda: [12345]).sample()
    assert snap.state == STATE_OK
    assert all(g.training_memory_bytes is None for g in snap.gpus)
    assert snap.training_gpu_memory_bytes is None
    assert any(m.figure == "processes" and "permission" in m.reason for m in snap.gpus[0].missing)


def test_per_process_memory_not_available_is_none() -> None:
    fake = FakeNvml([FakeGpu(compute=[(4242, None)])])
    snap = GpuSampler(nvml=NvmlBoundary(load=lambda: fake), training_pids=lambda: [4242]).sample()
    (proc,) = snap.gpus[0].processes
    assert proc.in_training and proc.used_gpu_memory_bytes is None
    assert snap.training_gpu_memory_bytes is None


def test_driver_gone_mid_sampling_shuts_nvml_and_reopens_later() -> None:
    fake = two_gpu_fake()
    sampler = GpuSampler(nvml=NvmlBoundary(load=lambda: fake), retry_s=3600)
    assert sampler.sample().available
    fake.driver_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    snap = sampler.sample()
    assert snap.state == STATE_NO_DRIVER and "driver is not loaded" in snap.reason
    assert fake.shutdown_calls == 1
    assert sampler.sample().state == STATE_NO_DRIVER  # waits retry_s before trying again
    assert fake.init_calls == 1
    fake.driver_error = None
    sampler.retry_s = 0
    assert sampler.sample().available
    assert fake.init_calls == 2
    sampler.stop()
    assert fake.initialized == 0


def test_driver_failure_on_a_figure_reopens() -> None:
    fake = two_gpu_fake()
    sampler = GpuSampler(nvml=NvmlBoundary(load=lambda: fake), retry_s=0)
    sampler.sample()
    fake.gpus[0].failures = {"nvmlDeviceGetMemoryInfo": pynvml.NVML_ERROR_UNINITIALIZED}
    snap = sampler.sample()
    assert snap.state == STATE_ERROR and "not initialised" in snap.reason
    assert fake.shutdown_calls == 1
    fake.gpus[0].failures = {}
    assert sampler.sample().available
    sampler.stop()


def test_old_driver_without_temperature_v_falls_back() -> None:
    fake = FakeNvml([FakeGpu(temperature_c=55)], has_temperature_v=False)
    sampler = GpuSampler(nvml=NvmlBoundary(load=lambda: fake))
    assert sampler.sample().gpus[0].temperature_c == 55
    assert sampler.sample().gpus[0].temperature_c == 55
    assert [fn for fn, _ in fake.calls].count("nvmlDeviceGetTemperatureV") == 1  # remembered
    assert not any(m.figure == "temperature_c" for m in sampler.latest().gpus[0].missing)


def test_non_nvml_exception_in_a_call_is_a_missing_figure() -> None:
    fake = two_gpu_fake()

    def bad_name(handle):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    fake.nvmlDeviceGetName = bad_name  # type: ignore[method-assign]
    snap = GpuSampler(nvml=NvmlBoundary(load=lambda: fake)).sample()
    assert snap.state == STATE_OK and snap.gpus[0].name is None
    assert any(m.figure == "name" and "UnicodeDecodeError" in m.reason for m in snap.gpus[0].missing)
    assert snap.gpus[0].utilization_percent == 31


def test_bytes_names_from_older_bindings_are_decoded() -> None:
    fake = two_gpu_fake()
    fake.nvmlDeviceGetName = lambda handle: b"Tesla T4"  # type: ignore[method-assign]
    assert GpuSampler(nvml=NvmlBoundary(load=lambda: fake)).sample().gpus[0].name == "Tesla T4"


def test_disabled_makes_no_nvml_call() -> None:
    fake = two_gpu_fake()
    snap = GpuSampler(nvml=NvmlBoundary(load=lambda: fake), enabled=False).sample()
    assert snap.state == STATE_DISABLED and "gpu = false" in snap.reason
    assert fake.calls == []


def test_series_follows_a_figure_for_sparklines() -> None:
    fake = FakeNvml([FakeGpu()])
    sampler = GpuSampler(nvml=NvmlBoundary(load=lambda: fake), history_len=3)
    for util in (10, 20, 30, 40):
        fake.gpus[0].utilization_percent = util
        sampler.sample()
    assert sampler.series(0, "utilization_percent") == (20, 30, 40)
    assert sampler.series(0, "utilization_percent", n=2) == (30, 40)
    assert sampler.series(5, "utilization_percent") == (None, None, None)
    with pytest.raises(MonitorError, match="not a GPU figure"):
        sampler.series(0, "fan_speed")


def test_a_failing_pid_source_does_not_blank_the_gpus() -> None:
    def broken():
        raise RuntimeError("tree sampler exploded")

    snap = GpuSampler(nvml=boundary_for("fake"), training_pids=broken).sample()
    assert snap.available and snap.training_pids == ()
