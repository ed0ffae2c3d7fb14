"""The job interface and its one runner: events as data, one job per kind, cancel, process isolation, Ctrl-C."""

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
    JobContext,
    JobFinished,
    JobMessage,
    JobProgress,
    JobStarted,
    event_from_json,
    run_job,
)
from cachewatch.engine.daemon.jobrunner import JobRunner
from cachewatch.engine.daemon.snapshot import JobView
from cachewatch.engine.jobs.base import STATUS_OK, STATUS_PROBLEMS

from tests.support.helpers import REPO, wait_for


@dataclass(frozen=True)
class CountReport:
    counted: int
    target: int
    pid: int = 0

    @property
    def ok(self) -> bool:
        return self.counted == self.target

    def summary(self) -> str:
        return f"counted {self.counted}"

    def to_json(self) -> dict:
        return {"counted": self.counted, "target": self.target, "pid": self.pid}


@dataclass
class CountJob(Job):
    """Counts to ``target``, reporting progress, until cancelled."""

    target: int = 50
    step_s: float = 0.01
    kind = "count"

    def run(self, ctx: JobContext) -> CountReport:
        for i in range(self.target):
            ctx.check()
            ctx.progress("count", i, self.target, bytes_done=100 * i, bytes_total=100 * self.target,
                         message=f"item {i}", force=True)
            time.sleep(self.step_s)
        return CountReport(self.target, self.target, os.getpid())


@dataclass
class ProcessCountJob(CountJob):
    isolation = "process"


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
    isolation = "process"

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


@dataclass
class ProcessFailingJob(FailingJob):
    isolation = "process"


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


def _runner() -> tuple[JobRunner, list[tuple[str, JobView]]]:
    seen: list[tuple[str, JobView]] = []
    return JobRunner(lambda kind, view: seen.append((kind, view))), seen


def test_one_job_per_kind_at_a_time() -> None:
    runner, _ = _runner()
    gate = threading.Event()
    first = runner.start_job(GateJob(gate))
    with pytest.raises(CachewatchError, match="already running"):
        runner.start_job(GateJob(gate))
    other = runner.start_job(CountJob(target=3))  # another kind runs alongside
    assert runner.wait(other.id, 30).state == "done"
    gate.set()
    assert runner.wait(first.id, 30).state == "done"
    again = runner.start_job(GateJob(gate))
    assert runner.wait(again.id, 30).state == "done"


@pytest.mark.parametrize("job", [CountJob(target=10_000), ProcessCountJob(target=10_000)], ids=["thread", "process"])
def test_cancel_stops_a_job_and_says_so(job: Job) -> None:
    runner, seen = _runner()
    view = runner.start_job(job)
    wait_for(lambda: runner.jobs()[0].done >= 3, timeout=60, what="some progress")
    runner.cancel(view.id)
    final = runner.wait(view.id, 60)
    assert final.state == "cancelled" and final.done < 10_000
    assert seen[0][0] == "job.started" and seen[-1][0] == "job.finished"


def test_a_job_in_a_process_reports_phase_bytes_and_eta_and_its_result() -> None:
    runner, seen = _runner()
    view = runner.start_job(ProcessCountJob(target=5, step_s=0.0))
    final = runner.wait(view.id, 60)
    assert final.state == "done" and final.result["counted"] == 5 and final.result["summary"] == "counted 5"
    progress = [v for _, v in seen if v.state == "running" and v.phase]
    assert [v.done for v in progress] == [0, 1, 2, 3, 4]  # every update, from the child, in order
    assert all(v.phase == "count" and v.total == 5 and v.unit == "items" for v in progress)
    assert [v.bytes_done for v in progress] == [0, 100, 200, 300, 400] and progress[-1].bytes_total == 500
    assert progress[-1].message == "item 4"
    assert final.result["pid"] != os.getpid()  # it really ran in another process


def test_a_job_process_killed_by_signal_9_fails_the_job_and_the_runner_lives_on() -> None:
    runner, _ = _runner()
    final = runner.wait(runner.start_job(SuicideJob()).id, 60)
    assert final.state == "failed" and "was killed by signal 9 (SIGKILL), probably out of memory" in (final.error or "")
    again = runner.wait(runner.start_job(ProcessCountJob(target=2, step_s=0.0)).id, 60)
    assert again.state == "done"


def test_a_failing_job_in_a_process_fails_with_its_one_line_error() -> None:
    runner, _ = _runner()
    final = runner.wait(runner.start_job(ProcessFailingJob()).id, 60)
    assert final.state == "failed" and final.error == "input 'x' is broken; fix it"


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
