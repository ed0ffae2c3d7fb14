"""The job interface: events as data, one job per kind, cancel, process isolation, Ctrl-C."""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cachewatch.engine.errors import CachewatchError
from cachewatch.engine.jobs import (
    Job,
    JobBusy,
    JobContext,
    JobFinished,
    JobMessage,
    JobProgress,
    JobRunner,
    JobStarted,
    event_from_json,
    run_job,
)
from cachewatch.engine.jobs.base import STATUS_CANCELLED, STATUS_FAILED, STATUS_OK, STATUS_PROBLEMS

from ..helpers import REPO


@dataclass(frozen=True)
class CountReport:
    counted: int
    target: int

    @property
    def ok(self) -> bool:
        return self.counted == self.target

    def summary(self) -> str:
        return f"counted {self.counted}"

    def to_json(self) -> dict:
        return {"counted": self.counted, "target": self.target}


@dataclass
class CountJob(Job):
    """Counts to ``target``, reporting progress, until cancelled."""

    target: int = 50
    step_s: float = 0.01
    kind = "count"

    def run(self, ctx: JobContext) -> CountReport:
        for i in range(self.target):
            ctx.check()
            ctx.progress("count", i, self.target, force=True)
            time.sleep(self.step_s)
        return CountReport(self.target, self.target)


@dataclass
class GateJob(Job):
    gate: threading.Event
    kind = "gate"

    def run(self, ctx: JobContext) -> CountReport:
        while not self.gate.wait(0.01):
            ctx.check()
        return CountReport(1, 1)


@dataclass
class SuicideJob(Job):
    kind = "suicide"

    def run(self, ctx: JobContext) -> CountReport:
        ctx.progress("dying", 1, 2, force=True)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
        return CountReport(0, 1)


@dataclass
class FailingJob(Job):
    kind = "failing"

    def run(self, ctx: JobContext) -> CountReport:
        raise CachewatchError("input 'x' is broken; fix it")


def test_events_are_frozen_data_that_round_trip_through_json() -> None:
    events = [
        JobStarted("j1", "verify", "verify /c"),
        JobProgress("j1", "verify", "hash", 3, 10, unit="files", bytes_done=5, bytes_total=9, eta_s=1.5),
        JobMessage("j1", "verify", "warning", "careful"),
        JobFinished("j1", "verify", STATUS_PROBLEMS, "2 problems", 1.0, report={"ok": False, "n": [1, 2]}),
    ]
    for e in events:
        back = event_from_json(e.to_json())
        assert back == e and type(back) is type(e)
        with pytest.raises(AttributeError):
            e.kind = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(events[-1])) == events[-1]
    assert events[1].fraction == 5 / 9


def test_one_job_per_kind_at_a_time() -> None:
    runner = JobRunner()
    gate = threading.Event()
    first = runner.start(GateJob(gate))
    with pytest.raises(JobBusy, match="already running"):
        runner.start(GateJob(gate))
    other = runner.start(CountJob(target=3))  # another kind runs alongside
    assert other.wait(30).status == STATUS_OK
    gate.set()
    assert first.wait(30).status == STATUS_OK
    again = runner.start(GateJob(gate))
    assert again.wait(30).status == STATUS_OK


def test_cancel_stops_a_job_and_says_so() -> None:
    seen: list = []
    runner = JobRunner(seen.append)
    h = runner.start(CountJob(target=10_000))
    while h.last_progress is None or h.last_progress.done < 3:
        time.sleep(0.01)
    assert runner.cancel(h.job_id)
    finished = h.wait(30)
    assert finished.status == STATUS_CANCELLED
    assert isinstance(seen[0], JobStarted) and isinstance(seen[-1], JobFinished)
    assert h.last_progress.done < 10_000


def test_a_job_in_a_process_reports_progress_and_its_result() -> None:
    seen: list = []
    runner = JobRunner(seen.append, isolation="process")
    h = runner.start(CountJob(target=5, step_s=0.0))
    finished = h.wait(60)
    assert finished.status == STATUS_OK and finished.report == {"counted": 5, "target": 5}
    assert [e.done for e in seen if isinstance(e, JobProgress)] == [0, 1, 2, 3, 4]


def test_a_job_process_that_dies_is_reported_and_the_runner_lives_on() -> None:
    runner = JobRunner(isolation="process")
    finished = runner.start(SuicideJob()).wait(60)
    assert finished.status == STATUS_FAILED and "killed by signal 9 (probably out of memory)" in finished.summary
    assert runner.start(CountJob(target=2, step_s=0.0)).wait(60).status == STATUS_OK


def test_run_job_raises_the_jobs_error_for_the_cli() -> None:
    with pytest.raises(CachewatchError, match="input 'x' is broken"):
        run_job(FailingJob())
    finished, report = run_job(CountJob(target=2, step_s=0.0))
    assert finished.status == STATUS_OK and report.counted == 2


def test_ctrl_c_during_a_split_exits_130_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "big.pkl.gz"
    with gzip.open(src, "wb", compresslevel=1) as f:
        pickle.dump([np.random.default_rng(i).random(20000) for i in range(400)], f)
    before = src.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachewatch.tui.cli", "split", "-i", str(src), "-o", str(tmp_path / "o"), "-n", "2",
         "--workers", "1", "--compress-level", "9"],
        stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    lines = []
    for line in proc.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if "sub-batches" in line:  # in the write phase, with sub-batches in flight
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    assert src.read_bytes() == before
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
