"""The supervisor with real processes: exit status, signals, restart policy and back-off,
pause/resume of the whole process group, graceful stop with escalation, launch errors."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from cachewatch.engine.training.runstate import RestartPolicy, TrainingState
from cachewatch.engine.training.supervisor import PROGRESS_ENV, LaunchError, Supervisor, SupervisorError, check_command
from tests.support.helpers import wait_for

PY = sys.executable


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, kind: str, fields: dict) -> None:
        self.events.append((kind, fields))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


@pytest.fixture
def sup_factory(tmp_path: Path):
    made: list[Supervisor] = []

    def make(command, **kw) -> tuple[Supervisor, Recorder]:
        rec = Recorder()
        s = Supervisor(command, log_path=tmp_path / "train.log", on_event=rec, **kw)
        made.append(s)
        return s, rec

    yield make
    for s in made:
        info = s.info()
        if not info.state.over and info.state is not TrainingState.STARTING:
            s.stop(timeout=10)


def test_exit_code_duration_and_output_are_recorded(sup_factory, tmp_path: Path) -> None:
    sup, rec = sup_factory([PY, "-c", "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"])
    sup.start()
    info = sup.wait(30)
    assert info.state is TrainingState.EXITED
    assert info.exit_code == 3 and info.signal is None
    assert info.exit_reason == "exited with code 3"
    assert info.history[-1].duration_s is not None and info.history[-1].duration_s > 0
    log = (tmp_path / "train.log").read_text()
    assert "to stdout" in log and "to stderr" in log  # both streams, one file
    assert rec.kinds() == ["training.started", "training.exited"]
    assert rec.events[1][1]["exit_code"] == 3


def test_death_by_signal_is_recorded_as_the_signal(sup_factory) -> None:
    sup, rec = sup_factory(["sleep", "30"])
    sup.start()
    os.kill(sup.pid, signal.SIGKILL)
    info = sup.wait(30)
    assert info.state is TrainingState.EXITED
    assert info.signal == "SIGKILL" and info.exit_code is None
    assert info.history[-1].failed


def test_training_runs_in_its_own_session_with_unbuffered_python(sup_factory, tmp_path: Path) -> None:
    code = "import os, sys; print(os.getsid(0), os.getpgid(0), os.environ.get('PYTHONUNBUFFERED'), os.environ.get('%s'))" % PROGRESS_ENV
    sup, _ = sup_factory([PY, "-c", code], progress_path=tmp_path / "progress.jsonl")
    sup.start()
    pid = sup.pid
    sup.wait(30)
    line = [ln for ln in (tmp_path / "train.log").read_text().splitlines() if not ln.startswith("[cachewatch]")][0]
    sid, pgid, unbuffered, progress = line.split()
    assert int(sid) == pid and int(pgid) == pid  # leader of a new session and group
    assert os.getsid(0) != pid
    assert unbuffered == "1"
    assert progress == str(tmp_path / "progress.jsonl")


def test_on_failure_restarts_with_backoff_up_to_the_maximum(sup_factory) -> None:
    policy = RestartPolicy("on-failure", max_restarts=2, backoff_s=0.2, backoff_max_s=0.3)
    sup, rec = sup_factory([PY, "-c", "import sys; sys.exit(1)"], policy=policy)
    sup.start()
    info = sup.wait(60)
    assert info.state is TrainingState.EXITED
    assert info.attempt == 3 and info.restarts == 2 and info.failure_restarts == 2
    delays = [f["delay_s"] for k, f in rec.events if k == "training.restarting"]
    assert delays == [0.2, 0.3]  # doubled, then capped by backoff_max
    starts = [a.started for a in info.history]
    assert starts[1] - info.history[0].ended >= 0.2 and starts[2] - info.history[1].ended >= 0.3


def test_on_failure_does_not_restart_a_success(sup_factory) -> None:
    sup, rec = sup_factory([PY, "-c", "pass"], policy=RestartPolicy("on-failure", 3, 0.1, 0.1))
    sup.start()
    info = sup.wait(30)
    assert info.state is TrainingState.EXITED and info.exit_code == 0 and info.restarts == 0
    assert "training.restarting" not in rec.kinds()


def test_never_policy_does_not_restart(sup_factory) -> None:
    sup, _ = sup_factory([PY, "-c", "import sys; sys.exit(1)"], policy=RestartPolicy("never", 3, 0.1, 0.1))
    sup.start()
    assert sup.wait(30).restarts == 0


def test_pause_and_resume_reach_every_process_of_the_group(sup_factory) -> None:
    # A parent with two children in its group, like a training with DataLoader workers.
    code = "import subprocess, time; ps=[subprocess.Popen(['sleep','60']) for _ in range(2)]; time.sleep(60)"
    sup, rec = sup_factory([PY, "-c", code])
    sup.start()
    root = psutil.Process(sup.pid)
    wait_for(lambda: len(root.children()) == 2, what="two children")
    pids = [sup.pid] + [c.pid for c in root.children()]
    sup.pause()
    wait_for(lambda: all(_proc_state(p) == "T" for p in pids), what="all stopped")
    assert sup.info().state is TrainingState.PAUSED
    sup.resume()
    wait_for(lambda: all(_proc_state(p) in "SR" for p in pids), what="all running again")
    assert sup.info().state is TrainingState.RUNNING and sup.info().paused_s > 0
    assert rec.kinds()[-2:] == ["training.paused", "training.resumed"]


def test_stop_is_graceful_first(sup_factory, tmp_path: Path) -> None:
    code = ("import signal, sys, time\n"
            "def bye(*a):\n    print('saving checkpoint', flush=True); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    sup, rec = sup_factory([PY, "-c", code], stop_grace_s=10)
    sup.start()
    wait_for(lambda: "\nready\n" in (tmp_path / "train.log").read_text(), what="ready")
    info = sup.stop()
    assert info.state is TrainingState.STOPPED and info.exit_code == 0
    assert "\nsaving checkpoint\n" in (tmp_path / "train.log").read_text()
    assert rec.kinds()[-1] == "training.stopped"


def test_stop_escalates_to_sigkill_after_the_grace_period(sup_factory) -> None:
    sup, _ = sup_factory(["sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"], stop_grace_s=0.5)
    sup.start()
    time.sleep(0.2)
    info = sup.stop()
    assert info.state is TrainingState.STOPPED and info.signal == "SIGKILL"


def test_stop_of_a_paused_training_still_lets_it_handle_sigterm(sup_factory, tmp_path: Path) -> None:
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('clean exit', flush=True), sys.exit(0)))\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    sup, _ = sup_factory([PY, "-c", code], stop_grace_s=10)
    sup.start()
    wait_for(lambda: "\nready\n" in (tmp_path / "train.log").read_text(), what="ready")
    sup.pause()
    info = sup.stop()
    assert info.exit_code == 0 and "\nclean exit\n" in (tmp_path / "train.log").read_text()


def test_workers_left_behind_by_a_killed_training_are_killed(sup_factory) -> None:
    code = "import subprocess, time; subprocess.Popen(['sleep','60']); time.sleep(60)"
    sup, _ = sup_factory([PY, "-c", code])
    sup.start()
    root = psutil.Process(sup.pid)
    wait_for(lambda: root.children(), what="child")
    child = root.children()[0]
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait(30)
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, what="orphan killed")


def test_manual_restart_relaunches_and_resets_failure_count(sup_factory) -> None:
    sup, rec = sup_factory(["sleep", "60"], stop_grace_s=2)
    sup.start()
    first = sup.pid
    info = sup.restart()
    assert info.state is TrainingState.RUNNING and info.attempt == 2 and info.restarts == 1
    assert info.pid != first and not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    assert info.history[0].requested  # the first attempt ended because we asked
    assert "training.restarted" in rec.kinds()


def test_restart_returns_after_its_events_are_delivered(tmp_path: Path) -> None:
    # The watcher thread delivers "exited, restarted, started"; a slow listener (the engine
    # writing its events file) must not let the reply to `restart` overtake them.
    delivered: list[str] = []

    def slow_listener(kind: str, fields: dict) -> None:
        if kind == "training.exited":
            time.sleep(0.2)
        delivered.append(kind)

    sup = Supervisor(["sleep", "60"], log_path=tmp_path / "train.log", on_event=slow_listener, stop_grace_s=2)
    sup.start()
    try:
        for attempt in range(2, 6):
            info = sup.restart()
            assert info.attempt == attempt
            assert delivered[-3:] == ["training.exited", "training.restarted", "training.started"], delivered
    finally:
        sup.stop(timeout=10)


def test_wait_returns_after_the_events_of_the_end_are_delivered(tmp_path: Path) -> None:
    # The watcher sets the final state, then delivers its events: a caller of wait() reading
    # what its listener got must find the end there, however slow the listener.
    delivered: list[str] = []

    def slow_listener(kind: str, fields: dict) -> None:
        if kind == "training.exited":
            time.sleep(0.5)
        delivered.append(kind)

    sup = Supervisor([PY, "-c", "raise SystemExit(4)"], log_path=tmp_path / "train.log", on_event=slow_listener)
    sup.start()
    info = sup.wait(30)
    assert info.exit_code == 4
    assert delivered == ["training.started", "training.exited"]


def test_restart_of_a_finished_training_starts_it_again(sup_factory) -> None:
    sup, _ = sup_factory([PY, "-c", "pass"])
    sup.start()
    sup.wait(30)
    info = sup.restart()
    assert info.attempt == 2
    assert sup.wait(30).exit_code == 0


def test_stop_during_backoff_cancels_the_restart(sup_factory) -> None:
    sup, rec = sup_factory([PY, "-c", "import sys; sys.exit(1)"], policy=RestartPolicy("on-failure", 3, 30, 60))
    sup.start()
    wait_for(lambda: sup.info().state is TrainingState.RESTARTING, what="restarting")
    t0 = time.monotonic()
    info = sup.stop()
    assert info.state is TrainingState.STOPPED and info.attempt == 1
    assert time.monotonic() - t0 < 25  # did not sit out the 30 s back-off


def test_progress_file_is_emptied_for_each_attempt(sup_factory, tmp_path: Path) -> None:
    progress = tmp_path / "progress.jsonl"
    code = f"import os; open(os.environ['{PROGRESS_ENV}'], 'a').write('line\\n')"
    sup, _ = sup_factory([PY, "-c", code], progress_path=progress)
    sup.start()
    sup.wait(30)
    sup.restart()
    sup.wait(30)
    assert progress.read_text() == "line\n"


def test_pause_when_not_running_is_a_clear_refusal(sup_factory) -> None:
    sup, _ = sup_factory([PY, "-c", "pass"])
    sup.start()
    sup.wait(30)
    with pytest.raises(SupervisorError, match="nothing to pause: the training is exited"):
        sup.pause()


@pytest.mark.parametrize(
    "command, message",
    [
        (["no-such-program-xyz"], "command 'no-such-program-xyz' not found on PATH"),
        (["./missing.py"], "'./missing.py' does not exist"),
        (["/tmp"], "is a directory, not a program"),
        ([], "no training command"),
    ],
)
def test_commands_that_cannot_start_are_one_line_errors(command, message, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=message) as err:
        Supervisor(command, log_path=tmp_path / "log").start()
    assert "\n" not in str(err.value)


def test_a_file_without_exec_permission_is_refused_with_the_fix(tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(LaunchError, match="is not executable; run `chmod \\+x"):
        check_command([str(script)])


def test_a_missing_working_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="does not exist; fix \\[run\\] cwd"):
        check_command(["true"], cwd=tmp_path / "nope")
