"""Progress snapshots from report records and parsed output, and the feed the supervisor uses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cachewatch.engine.training import (
    ProgressFeed,
    ProgressSnapshot,
    ProgressTracker,
    ReportRecord,
    parse_line,
    report,
)


def rec(kind: str, t: float, **fields) -> ReportRecord:
    return ReportRecord.from_json({"v": 1, "kind": kind, "t": t, **fields})


def test_report_records_win_over_parsed_output() -> None:
    tr = ProgressTracker()
    tr.add_parsed(parse_line("Epoch 2/10:  50%|█████     | 50/100 [00:10<00:10,  5.00it/s, loss=0.9]"), 1.0)  # type: ignore[arg-type]
    assert tr.snapshot(1.0).source == "parsed"
    tr.add_record(rec("progress", 2.0, epoch=3, total_epochs=15, step=120, total_steps=500, loss=0.41))
    tr.add_parsed(parse_line("Epoch 2/10:  51%|█████     | 51/100 [00:10<00:10,  5.00it/s, loss=0.8]"), 3.0)  # type: ignore[arg-type]
    snap = tr.snapshot(3.0)
    assert (snap.epoch, snap.total_epochs, snap.step, snap.total_steps, snap.loss) == (3, 15, 120, 500, 0.41)
    assert snap.source == "report"


def test_parsed_output_still_fills_what_the_report_does_not_give() -> None:
    tr = ProgressTracker()
    tr.add_record(rec("checkpoint", 1.0, path="/ckpt/e1.pt"))
    tr.add_parsed(parse_line("Epoch 2/10:  50%|█████     | 50/100 [00:10<00:10,  5.00it/s, loss=0.9]"), 2.0)  # type: ignore[arg-type]
    snap = tr.snapshot(2.0)
    assert (snap.epoch, snap.step, snap.loss, snap.last_checkpoint) == (2, 50, 0.9, "/ckpt/e1.pt")


def test_zero_based_epochs_are_shown_from_one() -> None:
    tr = ProgressTracker()
    tr.add_parsed(parse_line("Epoch 0:  10%|█         | 1/10 [00:01<00:09,  1.00it/s]"), 1.0)  # type: ignore[arg-type]
    tr.add_parsed(parse_line("Epoch 1:  10%|█         | 1/10 [00:01<00:09,  1.00it/s]"), 12.0)  # type: ignore[arg-type]
    assert tr.snapshot(12.0).epoch == 2


def test_epoch_end_moves_to_the_next_epoch_and_keeps_validation_metrics() -> None:
    tr = ProgressTracker()
    tr.add_record(rec("epoch_start", 0.0, epoch=1, total_epochs=3, total_steps=10))
    tr.add_record(rec("progress", 5.0, epoch=1, step=10, loss=0.5))
    tr.add_record(rec("epoch_end", 6.0, epoch=1, metrics={"val_loss": 0.4}))
    snap = tr.snapshot(6.0)
    assert (snap.epoch, snap.step, snap.loss, snap.metrics["val_loss"]) == (2, 0, 0.5, 0.4)
    assert snap.eta.epochs_done == 1 and snap.eta.epochs_left == 2


def test_other_ranks_are_ignored() -> None:
    tr = ProgressTracker()
    tr.add_record(rec("progress", 1.0, epoch=1, step=5, rank=0))
    tr.add_record(rec("progress", 1.1, epoch=1, step=99, rank=1))
    assert tr.snapshot(2.0).step == 5


def test_validation_bars_do_not_move_the_step() -> None:
    tr = ProgressTracker()
    tr.add_parsed(parse_line("Epoch 0:  50%|█████     | 5/10 [00:01<00:01,  5.00it/s]"), 1.0)  # type: ignore[arg-type]
    tr.add_parsed(parse_line("Validation DataLoader 0:  50%|█████     | 2/4 [00:00<00:00, 12.00it/s]"), 1.1)  # type: ignore[arg-type]
    assert tr.snapshot(1.2).step == 5


def test_snapshot_json_round_trip_with_nan_loss() -> None:
    tr = ProgressTracker()
    tr.add_record(rec("progress", 1.0, epoch=1, total_epochs=2, step=3, total_steps=10, loss=float("nan"), metrics={"acc": 0.5, "gn": float("inf")}))
    snap = tr.snapshot(2.0)
    wire = json.dumps(snap.to_json(), allow_nan=False)  # strict JSON on the wire
    back = ProgressSnapshot.from_json(json.loads(wire))
    assert math.isnan(back.loss) and back.metrics["gn"] == math.inf  # type: ignore[arg-type]
    assert back.eta == snap.eta and (back.epoch, back.step) == (1, 3)


def test_empty_snapshot() -> None:
    snap = ProgressTracker().snapshot(5.0)
    assert snap.source is None and snap.epoch is None and snap.eta.remaining_s is None and snap.eta.method == "none"
    assert ProgressSnapshot.from_json(snap.to_json()) == snap


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from cachewatch.engine.training import report
    report.epoch_start(1, 2, total_steps=20)
    for epoch in (1, 2):
        for step in range(1, 21):
            time.sleep(0.005)
            report.progress(epoch=epoch, total_epochs=2, step=step, total_steps=20, loss=1.0 / step)
            sys.stdout.write(f"\\rEpoch {epoch}/2: {step * 5}%|#| {step}/20 [00:01<00:01, 9.00it/s, loss=9.9]")
            sys.stdout.flush()
        report.epoch_end(epoch, 2, val_loss=0.3)
        report.checkpoint(f"ckpt/e{epoch}.pt", epoch=epoch)
    report.event("done", best=0.3)
    print()
    """
)


def test_feed_follows_a_real_training_process(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    feed = ProgressFeed(tmp_path / "progress.jsonl")
    env = {**os.environ, **feed.environment(), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    events = []
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 64):
        feed.feed_output(chunk)
        events += [r for r in feed.poll() if r.kind == "event"]
    assert proc.wait() == 0
    feed.finish()
    events += [r for r in feed.poll() if r.kind == "event"]
    snap = feed.snapshot()
    assert snap.source == "report"
    assert (snap.epoch, snap.total_epochs, snap.total_steps) == (2, 2, 20)
    assert snap.loss == 1.0 / 20  # the report's loss, not the bar's 9.9
    assert snap.metrics["val_loss"] == 0.3
    assert snap.last_checkpoint == "ckpt/e2.pt"
    assert snap.eta.epochs_left == 0 and snap.eta.fraction_done == 1.0
    # Once the process exited there is no ETA and no finish time, but how it ended and the total.
    assert (snap.eta.state, snap.eta.remaining_s, snap.eta.finish_time) == ("exited", None, None)
    assert snap.eta.training_s is None or snap.eta.training_s >= 0
    assert [e.name for e in events] == ["done"] and events[0].fields["best"] == 0.3
    assert feed.environment() == {report.ENV_VAR: str(tmp_path / "progress.jsonl")}


def test_feed_without_a_progress_file_parses_output() -> None:
    feed = ProgressFeed()
    feed.feed_output(b"Epoch 3/15\n", time_s=10.0)
    feed.feed_output(b"\r 40%|####      | 40/100 [00:20<00:30,  2.00it/s, loss=0.7]", time_s=30.0)
    snap = feed.snapshot(30.0)
    assert (snap.source, snap.epoch, snap.total_epochs, snap.step, snap.total_steps, snap.loss) == ("parsed", 3, 15, 40, 100, 0.7)
    assert feed.poll() == [] and feed.environment() == {}


from hypothesis import given, settings
from hypothesis import strategies as st

from tests.training.test_parsers import _SNIPPETS


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_SNIPPETS + ["Epoch 0:", "Epoch 9/3", "{'epoch': 1e308}", " 0/0 ", "7/5 [00:01<00:02, 1it/s]"]) | st.text(max_size=10), st.floats(0, 5)), max_size=60))
def test_any_output_gives_a_snapshot_in_strict_json(chunks: list[tuple[str, float]]) -> None:
    feed = ProgressFeed()
    t = 1000.0
    for text, dt in chunks:
        t += dt
        feed.feed_output(text, time_s=t)
    feed.finish(t)
    snap = feed.snapshot(t + 1)
    json.dumps(snap.to_json(), allow_nan=False)
    eta = snap.eta
    assert eta.remaining_s is None or eta.remaining_s >= 0
    assert eta.fraction_done is None or 0 <= eta.fraction_done <= 1


def test_hugging_face_fractional_epochs() -> None:
    tr = ProgressTracker()
    for t, epoch in enumerate((0.25, 1.0, 1.5, 2.0)):
        tr.add_parsed(parse_line(f"{{'loss': 0.5, 'learning_rate': 1e-05, 'epoch': {epoch}}}"), float(t))  # type: ignore[arg-type]
        assert tr.snapshot(float(t)).epoch == {0.25: 1, 1.0: 1, 1.5: 2, 2.0: 2}[epoch]


def _status_progress_line(snap: ProgressSnapshot, when: float) -> str:
    from cachewatch.engine.cli.engine_cmd import format_status
    from cachewatch.engine.daemon.snapshot import EngineInfo, EngineSnapshot

    es = EngineSnapshot(seq=1, time=when, engine=EngineInfo(name="e", pid=1, version="0", protocol="1", started=0.0),
                        progress=ProgressSnapshot.from_json(json.loads(json.dumps(snap.to_json()))))
    return next(line for line in format_status(es) if "progress" in line)


def test_status_shows_finished_or_stopped_and_the_total_instead_of_an_eta() -> None:
    """Nested tqdm with leave=False ends at 348/350: after exit no ETA, but how it ended and how long."""
    for outcome in ("finished", "stopped"):
        feed = ProgressFeed(started_time=0.0)
        for s in range(0, 349):
            feed.feed_output(f"\rEpoch 3/3: {s * 100 // 350:3d}%|#   | {s}/350 [00:01<00:02, 10.00it/s]".encode(), time_s=1.0 + 0.1 * s)
        running = feed.snapshot(36.0)
        assert running.eta.remaining_s is not None and "ETA" in _status_progress_line(running, 36.0)
        feed.finish(40.0, outcome)
        snap = feed.snapshot(100.0)
        assert (snap.eta.state, snap.eta.remaining_s, snap.eta.finish_time, snap.eta.training_s) == (outcome, None, None, 40.0)
        line = _status_progress_line(snap, 100.0)
        assert f"{outcome} after 40s" in line and "ETA" not in line


def test_a_pause_neither_runs_the_eta_down_nor_inflates_it() -> None:
    """Issue 10 item 6: a 13 s pause moved 1m02s to 2m21s."""
    def feed_steps(tr: ProgressTracker, start: int, stop: int, t: float) -> float:
        for s in range(start, stop):
            tr.add_parsed(parse_line(f"Epoch 1/1:  {s}%|#   | {s}/100 [00:01<00:02, 1.00it/s]"), t)  # type: ignore[arg-type]
            t += 1.0
        return t

    tr = ProgressTracker(started_time=0.0)
    t = feed_steps(tr, 0, 40, 0.0)  # 1 s a step: at step 39, 61 s left
    before = tr.snapshot(t - 1.0).eta.remaining_s
    tr.pause(t - 1.0)
    assert tr.snapshot(t + 5.0).eta.remaining_s == before  # frozen while paused
    assert tr.snapshot(t + 5.0).eta.state == "paused"
    tr.resume(t - 1.0 + 13.0)
    t = feed_steps(tr, 40, 45, t + 13.0)
    after = tr.snapshot(t - 1.0).eta
    assert before == pytest.approx(61.0)
    assert after.remaining_s == pytest.approx(56.0)  # 5 more steps at 1 s: 61 -> 56 after step 44, the pause left out
    assert after.step_s == pytest.approx(1.0)
    assert after.paused_s == pytest.approx(13.0)
