"""The engine-dashboard contract: a snapshot with every part filled by the real samplers and
feeds survives JSON unchanged and typed, and every command's answer fits its result type.

mypy (strict on engine/daemon/ and tui/, see pyproject.toml) is what catches a misspelled
field name at review time; these tests catch the same mistakes at run time: a part whose
JSON misses a field raises instead of decoding to blanks, and the typed values have no
``part_value``-style fallback that turns a wrong name into None.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache, load_config
from cachewatch.engine.daemon import Engine
from cachewatch.engine.daemon.errors import ProtocolError
from cachewatch.engine.daemon.parts import default_parts
from cachewatch.engine.daemon.protocol import COMMANDS
from cachewatch.engine.daemon.results import (
    RESULT_TYPES,
    AlertResult,
    EvictResult,
    JobResult,
    StopResult,
    TrainingResult,
    decode_result,
)
from cachewatch.engine.daemon.snapshot import EngineSnapshot
from cachewatch.engine.daemon.metrics import SnapshotCollector
from cachewatch.engine.monitor import GpuSnapshot, HostSnapshot, Monitor, NvmlBoundary, TreeSnapshot
from cachewatch.engine.training.progress import ProgressSnapshot
from cachewatch.engine.watch.stats import WatchStats

from ..monitor.fake_nvml import FakeGpu, FakeNvml
from tests.support.engine import wait_for

# A training that reports progress through its output, runs out of GPU memory in words
# (seed 001's message) and keeps one DataLoader-like child process.
TRAINING = r"""
import multiprocessing as mp, time

def worker():
    time.sleep(120)

if __name__ == "__main__":
    child = mp.get_context("spawn").Process(target=worker, daemon=True)
    child.start()
    print("Epoch 2/5: 10%|#| 10/100 [00:01<00:09, 9.8it/s, loss=0.5]", flush=True)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
          "3.68 GiB of which 11.75 MiB is free.", flush=True)
    for step in range(11, 100):
        print(f"Epoch 2/5: {step}%|#| {step}/100 [00:01<00:09, 9.8it/s, loss=0.4]", flush=True)
        time.sleep(0.2)
    time.sleep(120)
"""


def _over_json(data: object) -> object:
    return json.loads(json.dumps(data))


@pytest.fixture
def full_engine(tmp_path: Path):
    cache_root, watch_root = tmp_path / "cache", tmp_path / "watched"
    watch_root.mkdir()
    for i in range(8):
        (watch_root / f"f{i}.bin").write_bytes(os.urandom(10_000))
        os.utime(watch_root / f"f{i}.bin", (1_000_000 + i, 1_000_000 + i))
    with Cache(cache_root, max_size="2MB") as cache:
        for i in range(20):
            cache.put(f"k{i:02d}", os.urandom(50_000))
    cfg_path = tmp_path / "cachewatch.toml"
    cfg_path.write_text(f"[cache]\nroot = '{cache_root}'\nmax_size = '2MB'\n[monitor]\ninterval = '0.2s'\n"
                        f"[[watch]]\nroot = '{watch_root}'\nmax_size = '1MB'\nmin_age = '0s'\n")
    (tmp_path / "train.py").write_text(TRAINING)
    config = load_config(cfg_path)
    parts = default_parts(config)
    fake = FakeNvml([FakeGpu()])
    parts.monitor = Monitor.from_config(config, nvml=NvmlBoundary(load=lambda: fake))
    engine = Engine(config, name="contract", command=(sys.executable, str(tmp_path / "train.py")),
                    state_dir=tmp_path / "state", cwd=tmp_path, parts=parts)
    engine.start()
    yield engine, cache_root, watch_root
    engine.close()


def _missing(s: EngineSnapshot) -> list[str]:
    """The parts of ``s`` not filled yet (by name, for the failure message)."""
    checks = {
        "training": s.training is not None and s.training.state.value == "running",
        "progress": s.progress is not None and s.progress.step is not None and s.progress.step > 10,
        "workers": s.workers is not None and s.workers.root_alive and len(s.workers.processes) >= 2,
        "gpu": s.gpu is not None and s.gpu.state == "ok",
        "host": s.host is not None and s.host.cpu_percent is not None,
        "watched": bool(s.watched),
        "caches": bool(s.caches) and s.caches[0].stats is not None,
        "evictions": bool(s.evictions),
        "alerts": any(a.kind == "cuda_oom" for a in s.alerts),
        "jobs": bool(s.jobs) and s.jobs[0].state != "running",
    }
    return [name for name, ok in checks.items() if not ok]


def _wait_complete(engine: Engine) -> EngineSnapshot:
    deadline = time.monotonic() + 60
    while missing := _missing(engine.snapshot()):
        assert time.monotonic() < deadline, f"parts still empty after 60 s: {', '.join(missing)}"
        time.sleep(0.05)
    return engine.snapshot()


def test_a_full_snapshot_survives_json_typed_and_equal(full_engine) -> None:
    engine, cache_root, _ = full_engine
    engine.execute("evict", {"to": "1MB"})
    engine.execute("verify", {})
    snap = _wait_complete(engine)

    back = EngineSnapshot.from_json(_over_json(snap.to_json()))  # type: ignore[arg-type]

    assert back == snap
    # Every part comes back as its package's own type, not as a mapping to dig into.
    assert isinstance(back.progress, ProgressSnapshot) and back.progress.total_epochs == 5
    assert isinstance(back.workers, TreeSnapshot) and back.workers.root_alive
    assert isinstance(back.gpu, GpuSnapshot) and back.gpu.gpus[0].name == "NVIDIA GeForce RTX 3050 Ti Laptop GPU"
    assert isinstance(back.host, HostSnapshot) and back.host.memory.total_bytes > 0
    assert all(isinstance(w, WatchStats) for w in back.watched) and back.watched[0].entries > 0
    assert any(a.kind == "cuda_oom" for a in back.alerts) and back.jobs[0].kind == "verify"
    assert back.caches[0].root == str(cache_root) and back.evictions[0].files > 0


def test_metrics_read_every_part_by_its_typed_fields(full_engine) -> None:
    engine, cache_root, watch_root = full_engine
    engine.execute("evict", {"to": "1MB"})
    engine.execute("verify", {})
    snap = _wait_complete(engine)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in SnapshotCollector(lambda: snap).collect() for s in fam.samples}
    e = (("engine", "contract"),)
    gpu = e + (("gpu", "0"), ("name", "NVIDIA GeForce RTX 3050 Ti Laptop GPU"))
    assert snap.progress is not None and snap.workers is not None and snap.host is not None and snap.gpu is not None
    assert samples[("cachewatch_gpu_utilization_ratio", gpu)] == pytest.approx(0.31)
    assert samples[("cachewatch_gpu_power_watts", gpu)] == 35.0
    assert samples[("cachewatch_gpu_available", e)] == 1.0
    assert samples[("cachewatch_training_epochs_total", e)] == 5.0
    assert samples[("cachewatch_training_step", e)] == float(snap.progress.step or 0)
    assert samples[("cachewatch_training_processes", e)] == len(snap.workers.processes)
    assert samples[("cachewatch_host_memory_total_bytes", e)] == snap.host.memory.total_bytes
    watched = e + (("root", str(watch_root)),)
    assert samples[("cachewatch_cache_size_bytes", watched)] == snap.watched[0].size_bytes
    assert samples[("cachewatch_cache_max_bytes", watched)] == 1_000_000


def test_every_command_answer_fits_its_result_type(full_engine) -> None:
    engine, cache_root, watch_root = full_engine
    assert set(RESULT_TYPES) == set(COMMANDS), "a command without a result type (or a result type without a command)"
    wait_for(lambda: engine.snapshot().alerts, timeout=30, what="the CUDA OOM alert")

    def run(name: str, **args: object) -> object:
        return decode_result(name, _over_json(engine.execute(name, args)))

    evicted = run("evict", to="1MB")
    assert isinstance(evicted, EvictResult) and evicted.root == str(cache_root) and evicted.files > 0
    assert evicted.describe.startswith("Evicted ")
    watched = run("evict", root=str(watch_root), to="50KB")
    assert isinstance(watched, EvictResult) and watched.root == str(watch_root)
    alert = engine.snapshot().alerts[0]
    dismissed = run("dismiss_alert", alert_id=alert.id)
    assert isinstance(dismissed, AlertResult) and dismissed.alert.id == alert.id and dismissed.alert.dismissed
    started = run("verify")
    assert isinstance(started, JobResult) and started.job.kind == "verify"
    cancelled = run("cancel_job", job_id=started.job.id)
    assert isinstance(cancelled, JobResult) and cancelled.job.id == started.job.id
    paused = run("pause")
    assert isinstance(paused, TrainingResult) and paused.training.state.value == "paused"
    resumed = run("resume")
    assert isinstance(resumed, TrainingResult) and resumed.training.state.value == "running"
    restarted = run("restart")
    assert isinstance(restarted, TrainingResult) and restarted.training.attempt == 2
    stopped = run("stop", what="training")
    assert isinstance(stopped, StopResult) and not stopped.engine_stopping
    assert stopped.training is not None and stopped.training.state.over
    again = run("start")
    assert isinstance(again, TrainingResult) and again.training.attempt == 3


def test_a_part_with_a_misspelled_or_missing_field_raises_instead_of_drawing_blanks() -> None:
    gpu = {"time": 1.0, "state": "ok", "reason": None, "gpus": [{"index": 0, "name": "A", "utilization_percent": 5,
           "memory_used_bytes": 1, "memory_total_bytes": 2, "temperature_c": 40, "power_w": 1.0, "power_limit_w": 2.0}]}
    engine = {"name": "e", "pid": 1, "version": "0", "protocol": "1.0", "started": 0.0}
    snap = EngineSnapshot.from_json({"seq": 1, "time": 1.0, "engine": engine, "gpu": gpu})
    assert snap.gpu is not None and snap.gpu.gpus[0].power_w == 1.0
    with pytest.raises(AttributeError):
        snap.gpu.gpus[0].power_watts  # type: ignore[attr-defined]  # the old part_value(g, "power_watts") read None
    misspelled = dict(gpu, stat=gpu["state"])
    del misspelled["state"]
    with pytest.raises(ValueError, match="GpuSnapshot"):
        EngineSnapshot.from_json({"seq": 1, "time": 1.0, "engine": engine, "gpu": misspelled})
    with pytest.raises(ProtocolError, match="does not fit TrainingResult"):
        decode_result("pause", {"trainig": {"state": "paused"}})
