"""The real example training under the engine, watched through a real socket client:
progress, ETA, DataLoader workers, exit status; and the OOM / kill diagnoses."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from cachewatch.engine import load_config
from cachewatch.engine.daemon import EngineClient
from cachewatch.engine.daemon.parts import default_parts
from cachewatch.engine.daemon.protocol import SnapshotPush

from tests.support.engine import EXAMPLE, EngineEnv, python_cmd, run_cli, wait_for

CUDA_OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 3.68 GiB "
    "of which 11.75 MiB is free. Including non-PyTorch memory, this process has 3.56 GiB memory in use. Of the "
    "allocated memory 3.40 GiB is allocated by PyTorch, and 95.12 MiB is reserved by PyTorch but unallocated. If "
    "reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
    "fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture(autouse=True)
def _composed_engine() -> None:
    # These tests need the progress feed (engine/training) and the samplers (engine/monitor)
    # composed into the engine; say so plainly rather than fail on a missing figure.
    parts = default_parts(load_config())
    assert parts.new_feed is not None and parts.classify_exit is not None, "engine/training (feed, oom) is not in this build"
    assert parts.monitor is not None, "engine/monitor is not in this build"


def test_a_real_training_is_observed_through_a_socket_client(engine_env: EngineEnv) -> None:
    entry = engine_env.start(
        sys.executable, str(EXAMPLE), "--epochs", "2", "--steps", "20", "--batch-size", "8", "--workers", "2",
        "--step-ms", "40", "--cache-dir", str(engine_env.tmp / "cache"), name="example",
    )
    steps: set[tuple[int, int]] = set()
    worker_counts: set[int] = set()
    etas: list[tuple[float, float]] = []
    totals: set[tuple[int | None, int | None]] = set()
    sources: set[str] = set()
    with EngineClient(entry.socket, client_name="test") as client:
        client.subscribe()
        while True:
            msg = client.recv(60)
            assert msg is not None, "no snapshot for 60 s"
            if not isinstance(msg, SnapshotPush):
                continue
            s = msg.snapshot
            p = s.progress
            if p is not None and p.epoch is not None:
                steps.add((p.epoch, p.step or 0))
                totals.add((p.total_epochs, p.total_steps))
                sources.add(p.source)
                remaining = p.eta.remaining_s
                if remaining is not None and s.training.state.value == "running":
                    etas.append((remaining, p.eta.finish_time))
            if s.workers is not None and s.training.state.value == "running":
                worker_counts.add(s.workers.worker_count)
            if s.training.state.over:
                final = s.training
                break
    assert final.state.value == "exited" and final.exit_code == 0 and final.signal is None
    assert final.restarts == 0 and final.duration_s(final.ended) > 0
    assert (2, 20) in totals and sources == {"report"}
    assert {1, 2} <= {e for e, _ in steps} and (2, 20) in steps
    assert 2 in worker_counts  # the two DataLoader workers, seen as such
    assert etas and all(r >= 0 and f > 0 for r, f in etas)
    assert any(r > 0 for r, _ in etas)
    log = (engine_env.state_dir("example") / "training.log").read_text()
    assert "Epoch 2/2 step 20/20" in log and "training finished" in log


def test_a_cuda_oom_message_gives_an_alert_with_its_figures(engine_env: EngineEnv) -> None:
    code = f"import sys, time\nprint('Epoch 1/15', flush=True)\ntime.sleep(0.2)\nsys.stderr.write({CUDA_OOM!r} + '\\n')\nsys.exit(1)"
    entry = engine_env.start(*python_cmd(code), name="oom")
    with EngineClient(entry.socket) as c:
        wait_for(lambda: any(a.kind == "cuda_oom" for a in c.snapshot().alerts), what="OOM alert")
        alert = next(a for a in c.snapshot().alerts if a.kind == "cuda_oom")
        events = c.events(kinds=["alert"])
    f = alert.figures
    assert f["tried_to_allocate_bytes"] == 20 * MiB
    assert abs(f["total_capacity_bytes"] - 3.68 * GiB) < 0.01 * GiB
    assert abs(f["free_bytes"] - 11.75 * MiB) < 0.01 * MiB
    assert abs(f["reserved_unallocated_bytes"] - 95.12 * MiB) < 0.01 * MiB
    remedies = " ".join(alert.remedies)
    for remedy in ("mixed precision", "gradient checkpointing", "batch size", "expandable_segments:True"):
        assert remedy in remedies
    assert alert.severity == "critical" and not alert.dismissed
    assert [e.get("id") for e in events] == [alert.id]  # recorded once, in the event stream
    status = run_cli("status", "oom").stdout
    assert "CUDA out of memory" in status and "tried to allocate 20.00 MiB" in status
    with EngineClient(entry.socket) as c:
        c.command("dismiss_alert", alert_id=alert.id)
        assert next(a for a in c.snapshot().alerts if a.id == alert.id).dismissed


def test_a_sigkill_is_reported_as_a_probable_host_oom_kill(engine_env: EngineEnv) -> None:
    entry = engine_env.start("sleep", "600", name="killed")
    with EngineClient(entry.socket) as c:
        os.kill(c.snapshot().training.pid, signal.SIGKILL)
        wait_for(lambda: any(a.kind == "host_oom_kill" for a in c.snapshot().alerts), what="host OOM alert")
        alert = next(a for a in c.snapshot().alerts if a.kind == "host_oom_kill")
    assert "probable host OOM kill" in alert.title
    assert any("dmesg" in r for r in alert.remedies)
