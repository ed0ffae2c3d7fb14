"""Progress and ETA from the trainers people use, each run for real (tiny models built from configs,
synthetic data, CPU, nothing downloaded) and its output fed to a real ProgressFeed as it arrives.

The libraries are the ``trainers`` extra (pip install -e ".[trainers]"). Each run takes a few
seconds plus the library's import time.
"""

from __future__ import annotations

import importlib.util
import signal
import time

import pytest

from .real_run import run_trainer

pytestmark = pytest.mark.timeout(300)


def need(module: str) -> None:
    # Found, not imported: the run happens in a subprocess (Keras needs KERAS_BACKEND=torch there).
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed; pip install -e '.[trainers]'")


def _train_snaps(run):
    return [s for _, s in run.snapshots]


# ------------------------------------------------------------------ 1. transformers 5.x


def test_transformers_trainer_with_eval_each_epoch() -> None:
    need("transformers")
    run = run_trainer("hf_train.py", "--epochs", "3", "--steps-per-epoch", "10", "--eval", "--sleep", "0.05",
                      sample_every_s=0.0)
    # transformers 5 prints the numbers as strings; the loss and the epochs come from them.
    assert b"'loss': '0." in run.output
    snaps = _train_snaps(run)
    seen = [s for s in snaps if s.total_epochs is not None]
    assert seen, "no epoch total was derived from the fractional epoch and the bar"
    assert {s.total_epochs for s in seen} == {3}
    assert {s.total_steps for s in seen} == {10}  # 30 global steps / 3 epochs
    assert {s.epoch for s in seen} == {1, 2, 3}
    assert all(s.loss is not None for s in seen)
    # The evaluation bars (6 steps, drawn under the training bar) never replace the training
    # figures, and the ETA does not vanish once an evaluation has run.
    after_first_eval = [s for s in seen if s.epoch >= 2]
    assert after_first_eval and all(s.total_steps == 10 for s in after_first_eval)
    assert all(s.eta.remaining_s is not None for s in after_first_eval if s.eta.state == "running")
    final = run.final()
    assert (final.epoch, final.total_epochs, final.eta.state, final.eta.remaining_s) == (3, 3, "finished", None)


def test_transformers_trainer_without_tqdm_still_has_epochs_and_an_eta() -> None:
    need("transformers")
    run = run_trainer("hf_train.py", "--epochs", "3", "--steps-per-epoch", "10", "--no-tqdm", "--sleep", "0.05")
    assert b"%|" not in run.output  # really no bar
    snaps = [s for s in _train_snaps(run) if s.epoch is not None]
    assert snaps
    # The number of epochs comes from the learning rate falling linearly to 0 (default schedule).
    assert snaps[-1].total_epochs == 3
    assert any(s.eta.remaining_s is not None and s.eta.remaining_s > 0 for s in snaps)
    assert snaps[-1].step is None  # no bar: the step is unknown, not 0
    assert run.final().epoch == 3


# ------------------------------------------------------------------ 3. PyTorch Lightning


def test_lightning_tqdm_bar_of_unknown_length_gives_the_epoch_remaining_time() -> None:
    need("lightning")
    run = run_trainer("lightning_train.py", "--bar", "tqdm", "--epochs", "3", "--steps", "8", "--iterable", "--sleep", "0.05")
    assert b"/? [" in run.output  # the epoch bar really has no total
    snaps = _train_snaps(run)
    later = [s for s in snaps if s.epoch is not None and s.epoch >= 2 and s.eta.state == "running" and s.total_epochs is None]
    # From the second epoch on, the epoch's length is known from the first: its remaining time is estimated.
    assert later and any(s.eta.epoch_remaining_s is not None for s in later)
    assert any(s.eta.step_s is not None for s in later)
    final = run.final()
    # "`Trainer.fit` stopped: `max_epochs=3` reached." gives the total at the end.
    assert (final.epoch, final.total_epochs, final.eta.state) == (3, 3, "finished")


def test_lightning_rich_bar_through_a_terminal() -> None:
    need("lightning")
    need("rich")
    run = run_trainer("lightning_train.py", "--bar", "rich", "--epochs", "3", "--steps", "8", "--sleep", "0.1", pty=True)
    assert "━".encode() in run.output and "•".encode() in run.output
    snaps = [s for s in _train_snaps(run) if s.epoch is not None]
    assert snaps, "nothing was read from Rich's progress rows"
    # Lightning prints "Epoch 2/2" for the third of three epochs: 0-based, total as the last index.
    assert {s.total_epochs for s in snaps} == {3}
    assert max(s.epoch for s in snaps) == 3
    assert any(s.total_steps == 8 for s in snaps)
    assert run.final().epoch == 3 and run.final().total_epochs == 3


def test_lightning_validation_bars_keep_the_training_step() -> None:
    need("lightning")
    run = run_trainer("lightning_train.py", "--bar", "tqdm", "--epochs", "2", "--steps", "8", "--sleep", "0.02")
    assert b"Validation DataLoader 0" in run.output
    totals = {s.total_steps for s in _train_snaps(run) if s.total_steps is not None}
    assert totals == {8}  # the 6-step validation bar was never read as training


# ------------------------------------------------------------------ 4. Keras verbose=2


def test_keras_verbose_2_times_epochs_from_the_epoch_line_and_shows_no_fake_step() -> None:
    need("keras")
    run = run_trainer("keras_train.py", "--verbose", "2", "--epochs", "4", "--steps", "10", "--sleep", "0.05")
    snaps = [s for s in _train_snaps(run) if s.epoch is not None]
    assert snaps and snaps[-1].total_epochs == 4
    running = [s for s in snaps if s.eta.state == "running" and s.epoch in (2, 3)]
    # Keras prints only "10/10 - 1s - ..." at each epoch's end: while an epoch runs the step is unknown.
    assert running and any(s.step is None for s in running)
    assert all(s.step != 0 for s in running)
    # The first epoch is timed from "Epoch 1/4", not from process start: the imports (several
    # seconds here) are not in the epoch time. The epoch average is bounded by the run's own
    # duration after the first epoch line, so it cannot contain the import time.
    est = run.feed.tracker.estimator
    first = est.epochs[0]
    assert first.duration_s is not None
    imports_s = first_line_time(run, b"Epoch 1/4") - run.started
    assert first.duration_s < (run.ended - run.started) - imports_s


def first_line_time(run, marker: bytes) -> float:
    # The snapshots carry arrival times; the first one that shows epoch 1 is when the line came.
    for t, s in run.snapshots:
        if s.epoch == 1:
            return t
    raise AssertionError(f"{marker!r} never seen")


# ------------------------------------------------------------------ 5/6. nested tqdm, end, pause


def test_nested_tqdm_leave_false_shows_finished_and_the_total_after_exit() -> None:
    need("tqdm")
    run = run_trainer("tqdm_nested.py", "--epochs", "3", "--steps", "40", "--sleep", "0.01")
    final = run.final()
    assert final.eta.state == "finished"
    assert final.eta.remaining_s is None and final.eta.finish_time is None
    assert final.eta.training_s == pytest.approx(run.ended - run.started)
    assert (final.epoch, final.total_epochs) == (3, 3)


def test_a_real_pause_is_not_training_time() -> None:
    need("tqdm")
    during = []

    def on_chunk(feed, now, proc):
        snap = feed.snapshot(now)
        if during or not snap.step or snap.step < 30:
            return
        proc.send_signal(signal.SIGSTOP)  # what the supervisor's pause does, to the real process
        feed.pause(time.time())
        during.append(feed.snapshot(time.time()))
        time.sleep(2.0)
        during.append(feed.snapshot(time.time()))
        proc.send_signal(signal.SIGCONT)
        feed.resume(time.time())

    run = run_trainer("tqdm_nested.py", "--epochs", "2", "--steps", "60", "--sleep", "0.02", on_chunk=on_chunk)
    a, b = during
    assert a.eta.state == b.eta.state == "paused"
    # While paused the remaining time stands still (the clock is stopped for the estimate).
    assert a.eta.remaining_s is not None and a.eta.remaining_s == b.eta.remaining_s
    assert b.eta.paused_s >= 2.0
    final = run.final()
    assert final.eta.paused_s >= 2.0
    # The pause is not in the step time: no step took anywhere near the 2 s pause.
    assert final.eta.step_s is not None and final.eta.step_s < 0.5
    assert final.eta.training_s == pytest.approx(run.ended - run.started - final.eta.paused_s, abs=0.01)


def test_a_stopped_training_shows_stopped_and_no_eta() -> None:
    need("tqdm")

    def on_chunk(feed, now, proc):
        snap = feed.snapshot(now)
        if snap.step and snap.step >= 10 and proc.poll() is None:
            assert snap.eta.remaining_s is not None  # it had an ETA while it ran
            proc.send_signal(signal.SIGTERM)

    run = run_trainer("tqdm_nested.py", "--epochs", "3", "--steps", "200", "--sleep", "0.02", on_chunk=on_chunk,
                      check=False, outcome="stopped")
    assert run.returncode != 0
    final = run.final()
    assert (final.eta.state, final.eta.remaining_s, final.eta.finish_time) == ("stopped", None, None)
    assert final.eta.training_s == pytest.approx(run.ended - run.started)
