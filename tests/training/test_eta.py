"""The ETA: seed 000's hand figures, warm-up and slow steps, and real runs whose true duration is known."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cachewatch.engine.training import EtaEstimate, EtaEstimator, ProgressTracker, ReportReader, parse_line, report
from cachewatch.engine.training.eta import naive_remaining_s

HOUR = 3600.0


# ---------------------------------------------------------------- seed 000


def test_seed_000_epoch_4_of_15_at_3_23_hours_per_epoch() -> None:
    # Epochs 1-3 took 3.23 h each; epoch 4 of 15 has just started. Seed 000, by hand:
    # "Épocas restantes: 12; Tiempo restante: ~38.8 horas; Finalización estimada: 21 Diciembre 2025, 00:54".
    start = datetime(2025, 12, 19, 0, 27, 0, tzinfo=timezone.utc).timestamp()
    tracker = ProgressTracker()
    for epoch in range(1, 5):
        t = start + (epoch - 1) * 3.23 * HOUR
        tracker.add_parsed(parse_line(f"Epoch {epoch}/15"), t)  # type: ignore[arg-type]
    now = start + 3 * 3.23 * HOUR  # 2025-12-19 10:08:24
    snap = tracker.snapshot(now)
    eta = snap.eta
    assert (snap.epoch, snap.total_epochs) == (4, 15)
    assert eta.method == "epochs"
    assert eta.epochs_done == 3
    # cachewatch counts the running epoch among those left: 3 done, so 12 left (11 after this one).
    assert eta.epochs_left == 12
    assert eta.avg_epoch_s == pytest.approx(3.23 * HOUR)
    assert eta.remaining_s == pytest.approx(12 * 3.23 * HOUR)  # 38.76 h
    assert round(eta.remaining_s / HOUR, 1) == 38.8
    finish = datetime.fromtimestamp(eta.finish_time, timezone.utc)  # type: ignore[arg-type]
    assert finish.strftime("%Y-%m-%d %H:%M") == "2025-12-21 00:54"


def test_running_epoch_counts_by_its_elapsed_part() -> None:
    est = EtaEstimator()
    for k in range(4):
        est.observe(k * 3.23 * HOUR, epoch_index=k, total_epochs=15)
    halfway = 3 * 3.23 * HOUR + 1.615 * HOUR
    eta = est.estimate(halfway)
    assert eta.epochs_left == 12
    assert eta.remaining_s == pytest.approx(11.5 * 3.23 * HOUR)


def test_slow_first_epoch_is_left_out_of_the_average() -> None:
    # A cold cache made epoch 1 take 10 h (seed 004); later epochs take 3 h.
    est = EtaEstimator()
    times = [0.0, 10 * HOUR, 13 * HOUR, 16 * HOUR]
    for k, t in enumerate(times):
        est.observe(t, epoch_index=k, total_epochs=10)
    eta = est.estimate(16 * HOUR)
    assert eta.avg_epoch_s == pytest.approx(3 * HOUR)
    assert eta.remaining_s == pytest.approx(7 * 3 * HOUR)


# ---------------------------------------------------------------- steps, synthetic schedules


def schedule_single(n: int = 100, first: float = 1.5, normal: float = 0.02, slow: float = 0.15, every: int = 20) -> list[float]:
    """Duration of each step: a slow first step, then a slow step every `every` steps (at 15, 35, ...)."""
    return [first if i == 1 else (slow if i % every == every - 5 else normal) for i in range(1, n + 1)]


def run_schedule(durations: list[float]) -> list[float]:
    times, t = [0.0], 0.0
    for d in durations:
        t += d
        times.append(t)
    return times  # times[i] = time when step i is done


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_steps_robust_to_slow_first_step_and_slow_steps(fraction: float) -> None:
    durations = schedule_single()
    times = run_schedule(durations)
    n = len(durations)
    at = int(n * fraction)
    est = EtaEstimator()
    est.observe(0.0, epoch_index=0, step=0, total_steps=n, total_epochs=1)
    for i in range(1, at + 1):
        est.observe(times[i], epoch_index=0, step=i)
    eta = est.estimate(times[at])
    true = times[-1] - times[at]
    naive = naive_remaining_s(times[at], at / n)
    assert eta.method == "steps"
    # At 30 % one slow step in 29 has been seen while 4 in 70 are to come: no estimator can know
    # that, hence 15 %; the naive estimate is off by more than twice as much everywhere.
    assert abs(eta.remaining_s - true) <= 0.15 * true  # type: ignore[operator]
    assert abs(naive - true) > 2 * abs(eta.remaining_s - true)  # type: ignore[operator]


def test_step_time_is_a_windowed_mean_after_warm_up() -> None:
    est = EtaEstimator(window_steps=50)
    est.observe(0.0, epoch_index=0, step=0, total_steps=1000, total_epochs=1)
    t = 5.0  # first step: 5 s of warm-up
    est.observe(t, epoch_index=0, step=1)
    for i in range(2, 102):
        t += 1.0
        est.observe(t, epoch_index=0, step=i)
    for i in range(102, 202):  # the cache is warm: steps get 4x faster
        t += 0.25
        est.observe(t, epoch_index=0, step=i)
    assert est.step_s() == pytest.approx(0.25)  # the window has forgotten the slow regime and the warm-up


def test_epoch_costs_outside_steps_are_counted() -> None:
    # Each epoch: 50 steps of 0.1 s, a 2 s start (workers spawning) and 3 s of validation at the end.
    est = EtaEstimator()
    t = 0.0
    for e in range(3):
        est.observe(t, epoch_index=e, step=0, total_steps=50, total_epochs=5)
        t += 2.0 + 0.1
        for s in range(1, 51):
            est.observe(t, epoch_index=e, step=s)
            if s < 50:
                t += 0.1
        t += 3.0  # validation
    est.observe(t, epoch_index=3, step=0)
    eta = est.estimate(t)
    epoch_s = 2.0 + 50 * 0.1 + 3.0
    assert eta.epoch_estimate_s == pytest.approx(epoch_s, rel=0.01)
    assert eta.remaining_s == pytest.approx(2 * epoch_s, rel=0.01)  # epoch 4 has not begun its first step: two whole epochs
    assert eta.avg_epoch_s == pytest.approx(epoch_s, rel=0.01)


def test_unknown_steps_per_epoch_is_learned_from_the_first_epoch() -> None:
    est = EtaEstimator()
    t = 0.0
    est.observe(t, epoch_index=0, step=0, total_epochs=3)
    for s in range(1, 41):
        t += 0.5
        est.observe(t, epoch_index=0, step=s)
    est.observe(t, epoch_index=1, step=0)
    for s in range(1, 11):
        t += 0.5
        est.observe(t, epoch_index=1, step=s)
    eta = est.estimate(t)
    assert est.steps_per_epoch() == 40
    assert eta.remaining_s == pytest.approx(30 * 0.5 + 40 * 0.5, rel=0.05)
    assert eta.fraction_done == pytest.approx(50 / 120)


def test_one_bar_without_epochs_is_the_whole_run() -> None:
    est = EtaEstimator()
    for s in range(0, 21):
        est.observe(s * 1.0, step=s, total_steps=100)
    eta = est.estimate(20.0)
    assert eta.remaining_s == pytest.approx(80.0)
    assert eta.fraction_done == pytest.approx(0.2)


def test_remaining_runs_down_between_observations() -> None:
    est = EtaEstimator()
    for s in range(0, 11):
        est.observe(s * 10.0, epoch_index=0, step=s, total_steps=20, total_epochs=2)
    at_obs = est.estimate(100.0).remaining_s
    later = est.estimate(125.0).remaining_s
    assert at_obs == pytest.approx(10 * 10 + 20 * 10)
    assert later == pytest.approx(at_obs - 25.0)  # type: ignore[operator]
    assert est.estimate(10_000.0).remaining_s == pytest.approx(20 * 10)  # never below the epochs still to run


def test_restarted_run_starts_the_epoch_history_again() -> None:
    est = EtaEstimator()
    for k in range(3):
        est.observe(k * 100.0, epoch_index=k, total_epochs=5)
    est.observe(400.0, epoch_index=1, total_epochs=5)  # resumed from epoch 2's checkpoint
    assert [e.index for e in est.epochs] == [0]
    assert est.estimate(400.0).epochs_done == 1


def test_estimate_json_round_trip() -> None:
    est = EtaEstimator()
    for s in range(0, 5):
        est.observe(s * 1.0, epoch_index=0, step=s, total_steps=10, total_epochs=2)
    eta = est.estimate(4.0)
    assert EtaEstimate.from_json(eta.to_json()) == eta


# ---------------------------------------------------------------- real runs


TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from cachewatch.engine.training import report

    def sleep_until(deadline):
        # time.sleep overshoots on a busy machine; aim at absolute deadlines so the
        # schedule's shape survives, and the recorded timestamps tell the real truth.
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    mode = sys.argv[1]
    t = time.perf_counter()
    if mode == "single":
        n = 100
        report.epoch_start(1, 1, total_steps=n)
        for step in range(1, n + 1):
            t += 1.5 if step == 1 else (0.15 if step % 20 == 15 else 0.02)
            sleep_until(t)
            report.progress(epoch=1, total_epochs=1, step=step, total_steps=n, loss=1.0 / step)
        report.epoch_end(1, 1)
    else:
        n, epochs = 30, 3
        for epoch in range(1, epochs + 1):
            report.epoch_start(epoch, epochs, total_steps=n)
            for step in range(1, n + 1):
                if step == 1:
                    t += 1.0 if epoch == 1 else 0.1  # start-up once, worker respawn every epoch
                else:
                    t += 0.12 if step == 15 else 0.02
                sleep_until(t)
                report.progress(epoch=epoch, total_epochs=epochs, step=step, total_steps=n)
            t += 0.2  # validation
            sleep_until(t)
            report.epoch_end(epoch, epochs, val_loss=0.5)
    """
)


def record_run(tmp_path: Path, mode: str) -> list:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    progress = tmp_path / "progress.jsonl"
    env = {**os.environ, report.ENV_VAR: str(progress)}
    subprocess.run([sys.executable, str(script), mode], env=env, check=True, timeout=120)
    return ReportReader(progress).read_new()


def replay(records: list, upto: int) -> ProgressTracker:
    tracker = ProgressTracker()
    for rec in records[: upto + 1]:
        tracker.add_record(rec)
    return tracker


def test_real_run_with_slow_first_step_and_slow_steps(tmp_path: Path) -> None:
    records = record_run(tmp_path, "single")
    steps = [i for i, r in enumerate(records) if r.kind == "progress"]
    start, end = records[0].time_s, records[-1].time_s
    for fraction in (0.3, 0.5, 0.8):
        i = steps[int(len(steps) * fraction) - 1]
        now = records[i].time_s
        eta = replay(records, i).snapshot(now).eta
        true = end - now
        naive = naive_remaining_s(now - start, records[i].step / 100)  # type: ignore[operator]
        err = abs(eta.remaining_s - true)  # type: ignore[operator]
        assert err <= 0.25 * true + 0.1, (fraction, eta.remaining_s, true)
        assert abs(naive - true) > err, (fraction, naive, eta.remaining_s, true)  # type: ignore[operator]


def test_real_run_over_epochs_with_per_epoch_costs(tmp_path: Path) -> None:
    records = record_run(tmp_path, "epochs")
    steps = [i for i, r in enumerate(records) if r.kind == "progress"]
    start, end = records[0].time_s, records[-1].time_s
    # From the second epoch on: the validation after each epoch and the per-epoch start cost
    # cannot be known before one epoch has ended (docs/progress.md).
    for fraction in (0.4, 0.6, 0.8):
        i = steps[int(len(steps) * fraction) - 1]
        now = records[i].time_s
        snap = replay(records, i).snapshot(now)
        true = end - now
        err = abs(snap.eta.remaining_s - true)  # type: ignore[operator]
        assert err <= 0.25 * true + 0.15, (fraction, snap.eta, true)
        done = ((snap.epoch - 1) * 30 + snap.step) / 90  # type: ignore[operator]
        naive = naive_remaining_s(now - start, done)
        if fraction < 0.7:
            assert abs(naive - true) > err, (fraction, naive, snap.eta.remaining_s, true)  # type: ignore[operator]


# ---------------------------------------------------------------- output arriving as a library draws it


def _rich_frame(epoch: int, step: int, rate: float) -> str:
    bar = "━" * 20
    return f"\r\x1b[2KEpoch {epoch}/4  {bar} {step}/30 0:00:00 • 0:00:01 {rate:.2f}it/s train_loss: 0.5"


def test_rich_frames_are_timed_when_they_arrive_not_at_the_next_redraw() -> None:
    # Lightning's Rich bar over 5 epochs of 30 steps at 0.1 s a step (3 s an epoch, 15 s in all),
    # redrawn once a second; each frame's "\r" terminator comes with the next frame. Read at the
    # terminator, every step figure was a redraw (1 s) late and so was the ETA (8-13 % in the bench).
    from cachewatch.engine.training import ProgressFeed

    feed = ProgressFeed(started_time=-5.0)
    frames = []
    for e in range(5):
        frames.append((3.0 * e, _rich_frame(e, 0, 0.0)))
        frames += [(3.0 * e + k + 0.5, _rich_frame(e, 10 * k + 5, 10.0)) for k in range(3)]
        frames.append((3.0 * e + 3.0, _rich_frame(e, 30, 10.0)))
    checked = 0
    for (t, frame), (t_next, _) in zip(frames, frames[1:] + [(99.0, "")]):
        feed.feed_output(frame.encode(), t)
        now = min(t + 0.9, t_next - 0.01)  # just before the next redraw
        eta = feed.snapshot(now).eta
        if 4.5 <= now <= 7.5:  # 30-50 % of the run, epoch 2 known from epoch 1
            assert eta.remaining_s == pytest.approx(15.0 - now, abs=0.25), (t, now, eta)
            checked += 1
    assert checked >= 3


def test_keras3_rows_are_timed_when_they_arrive_not_at_the_next_step() -> None:
    # Keras 3 verbose=1 on a terminal: 2 epochs of 20 steps at 60 s a step (2400 s in all); each
    # row's "\r" comes with the next step's row, a minute later. Read at the terminator, every
    # figure was a step late and the ETA a minute too long.
    from cachewatch.engine.training import ProgressFeed

    feed = ProgressFeed(started_time=-30.0)
    frames: list[tuple[float, str]] = []
    for e in range(2):
        t0 = 1200.0 * e
        frames.append((t0, f"Epoch {e + 1}/2\n"))
        for s in range(1, 21):
            left = (20 - s) * 60
            end = "\n" if s == 20 else "\b" * 30
            frames.append((t0 + 60.0 * s, f"\r\x1b[1m{s:2d}/20\x1b[0m \x1b[32m━━━━\x1b[0m \x1b[1m{left}s\x1b[0m 60s/step - loss: 0.5{end}"))
    checked = 0
    for (t, frame), (t_next, _) in zip(frames, frames[1:] + [(9999.0, "")]):
        feed.feed_output(frame.encode(), t)
        now = min(t + 55.0, t_next - 1.0)  # before the next row
        eta = feed.snapshot(now).eta
        if 720.0 <= now <= 1200.0:  # 30-50 % of the run, in the first epoch
            assert eta.remaining_s == pytest.approx(2400.0 - now, abs=10.0), (t, now, eta)
            checked += 1
    assert checked >= 5
