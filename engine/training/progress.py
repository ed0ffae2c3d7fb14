"""The training's progress as one immutable snapshot, from report records and parsed output.

A script that calls :mod:`report` says exactly where it is; output parsing is the
fallback. Both may be present (a script that reports and also shows a tqdm bar): for
each group of figures (epochs, steps, loss and metrics), once the report has given
that group, parsed output no longer changes it.

Epoch numbers: ``ProgressSnapshot.epoch`` is the running epoch counted from 1
(``Epoch 4/15``). A source that is seen to print epoch 0 (Lightning's ``Epoch 0:``, a
``for epoch in range(n)`` loop reporting ``epoch``) is taken as counting from 0 and
shifted by one.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .eta import EtaEstimate, EtaEstimator
from .parsers import ParsedProgress
from .records import ReportRecord

__all__ = ["ProgressSnapshot", "ProgressTracker"]


def _json_float(value: float | None) -> float | str | None:
    # JSON has no NaN: a diverged loss travels as the string "NaN" and comes back as a float.
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _from_json_float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where the training is. ``source`` is ``report`` (the script's own calls), ``parsed``
    (read from its output) or None (nothing seen yet); ``updated_time`` is the wall-clock
    time of the last observation that changed it."""

    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    last_checkpoint: str | None = None
    last_checkpoint_time: float | None = None
    source: str | None = None
    updated_time: float | None = None
    eta: EtaEstimate = field(default_factory=EtaEstimate)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "total_epochs": self.total_epochs,
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": _json_float(self.loss),
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "last_checkpoint": self.last_checkpoint,
            "last_checkpoint_time": self.last_checkpoint_time,
            "source": self.source,
            "updated_time": self.updated_time,
            "eta": self.eta.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProgressSnapshot":
        return cls(
            epoch=data.get("epoch"),
            total_epochs=data.get("total_epochs"),
            step=data.get("step"),
            total_steps=data.get("total_steps"),
            loss=_from_json_float(data.get("loss")),
            metrics={k: float(v) for k, v in (data.get("metrics") or {}).items()},
            last_checkpoint=data.get("last_checkpoint"),
            last_checkpoint_time=data.get("last_checkpoint_time"),
            source=data.get("source"),
            updated_time=data.get("updated_time"),
            eta=EtaEstimate.from_json(data.get("eta") or {}),
        )


class _Numbering:
    """Whether one source counts epochs from 0 or from 1."""

    def __init__(self) -> None:
        self.zero_based = False

    def running(self, printed: int) -> int:
        if printed == 0:
            self.zero_based = True
        return printed + 1 if self.zero_based else printed


class _BarRoles:
    """Tells the training's step bar from evaluation bars drawn beside or after it.

    A bar whose description names an epoch, or whose length matches the training bar, is
    the training. A bar of another length is an evaluation bar while the training bar is
    still running (Trainer's nested eval bar under its one bar over the whole run), and
    also when it is shorter and starts after the training bar completed (an eval loop
    after each epoch). A shorter bar that comes back without the training bar's
    length coming back (the first bar was a one-off preprocessing bar) becomes the
    training bar at its second run.
    """

    def __init__(self) -> None:
        self.main_total: int | None = None
        self.main_done = False
        self._side_total: int | None = None
        self._side_step = -1
        self._side_runs = 0

    def is_side_bar(self, obs: ParsedProgress) -> bool:
        if obs.format not in ("tqdm", "rich", "keras") or obs.step is None:
            return False
        total = obs.total_steps
        names_epoch = obs.epoch is not None or obs.total_epochs is not None
        if names_epoch or total is None or self.main_total is None or total == self.main_total or total > self.main_total:
            if total is not None:
                self._take_main(total, obs.step)
            return False
        if not self.main_done:
            return True  # beside the running training bar
        if total != self._side_total:
            self._side_total, self._side_runs = total, 1
        elif obs.step < self._side_step:
            self._side_runs += 1
        self._side_step = obs.step
        if self._side_runs >= 2:
            self._take_main(total, obs.step)  # it came back without the old bar: it is the training
            return False
        return True

    def _take_main(self, total: int, step: int) -> None:
        self.main_total, self.main_done = total, step >= total
        self._side_total, self._side_runs, self._side_step = None, 0, -1


class _HfEpochs:
    """Epochs of a Hugging Face Trainer run, from its log dicts' fractional ``epoch`` and its bar.

    Trainer draws one bar over the whole run (``12/30``) and logs ``'epoch': '1.2'``: the
    two give the steps per epoch (10) and the epochs (3). With ``disable_tqdm=True`` only
    the logs remain; the fractional epoch is then the progress (as virtual steps), and the
    number of epochs is read off the learning rate where it falls linearly to zero (the
    default schedule): without that no total is known and only the epoch's end is estimated.
    """

    VIRTUAL_STEPS = 1000

    def __init__(self) -> None:
        self.active = False
        self.mapped = False
        self._bar_step: int | None = None
        self._bar_total: int | None = None
        self._pending: float | None = None
        self._best: tuple[int, float] | None = None  # (global step, epochs) of the most precise pair
        self._lr: list[tuple[float, float]] = []
        self._seen_bar = False

    def log(self, obs: ParsedProgress, t: float) -> None:
        e = obs.epochs_done
        if e is None or not math.isfinite(e) or e <= 0:
            return
        self.active = True
        lr = obs.metrics.get("learning_rate")
        if lr is not None and math.isfinite(lr) and "eval_loss" not in obs.metrics:
            if not self._lr or e > self._lr[-1][0]:
                self._lr.append((e, lr))
                del self._lr[:-50]
        self._pending = e
        if self._bar_step:
            self._pair(self._bar_step, e)

    def bar(self, step: int, total: int | None) -> None:
        self._seen_bar = True
        self._bar_step, self._bar_total = step, total
        if self._pending is not None and step > 0:
            # tqdm redraws its bar right after the log line: that redraw shows the step logged.
            self._pair(step, self._pending)
            self._pending = None

    def _pair(self, step: int, epochs: float) -> None:
        if self._best is None or step > self._best[0]:
            self._best = (step, epochs)

    def steps_per_epoch(self) -> int | None:
        if self._best is None:
            return None
        step, epochs = self._best
        spe = round(step / epochs)
        return spe if spe > 0 else None

    def map_step(self, step: int) -> tuple[int, int, int] | None:
        spe = self.steps_per_epoch()
        if spe is None:
            return None
        self.mapped = True
        index = (step - 1) // spe if step > 0 else 0
        if self._bar_total:
            index = min(index, max(0, math.ceil(self._bar_total / spe) - 1))
        return index, step - index * spe, spe

    def virtual(self, epochs: float) -> tuple[int, int] | None:
        if self._seen_bar:
            return None
        index = max(0, math.ceil(epochs) - 1)
        return index, int(round((epochs - index) * self.VIRTUAL_STEPS))

    def total_epochs(self) -> int | None:
        spe = self.steps_per_epoch()
        if spe and self._bar_total:
            return max(1, math.ceil(self._bar_total / spe - 0.01))
        return self._lr_total()

    def _lr_total(self) -> int | None:
        pts = self._lr
        if len(pts) < 3:
            return None
        peak = max(range(len(pts)), key=lambda i: pts[i][1])
        pts = pts[peak:]  # after warm-up
        if len(pts) < 3:
            return None
        (e0, l0), (e1, l1) = pts[0], pts[-1]
        if not (e1 > e0 and l0 > l1 > 0):
            return None
        slope = (l1 - l0) / (e1 - e0)
        for e, lr in pts:  # linear, or it is another schedule and says nothing about the end
            if abs(l0 + slope * (e - e0) - lr) > 0.02 * l0:
                return None
        crossing = e1 - l1 / slope
        # The logged rate is the one of the step before: the line meets zero one step late.
        return max(1, math.ceil(crossing - 0.2))


class ProgressTracker:
    """Consumes report records and parsed observations (in time order) and yields snapshots.

    Thread-safe: the output reader, the progress-file poller and snapshot readers may be
    different threads.
    """

    def __init__(self, *, started_time: float | None = None, window_steps: int = 200) -> None:
        self._lock = threading.Lock()
        self.estimator = EtaEstimator(window_steps=window_steps)
        if started_time is not None:
            self.estimator.start(started_time)
        self._epoch: int | None = None  # 1-based running epoch
        self._total_epochs: int | None = None
        self._step: int | None = None
        self._total_steps: int | None = None
        self._loss: float | None = None
        self._metrics: dict[str, float] = {}
        self._checkpoint: str | None = None
        self._checkpoint_time: float | None = None
        self._updated: float | None = None
        self._from_report = {"epoch": False, "step": False, "loss": False}
        self._any_report = False
        self._any_parsed = False
        self._report_numbering = _Numbering()
        self._parsed_numbering = _Numbering()
        self._bars = _BarRoles()
        self._hf = _HfEpochs()
        self._steps_within_epoch = False  # the output shows steps while an epoch runs (not Keras verbose=2)

    # ------------------------------------------------------------------ report records

    def add_record(self, rec: ReportRecord) -> None:
        if rec.rank not in (None, 0):
            return  # in distributed runs every rank reports the same progress; rank 0 speaks for all
        with self._lock:
            self._add_record(rec)

    def _add_record(self, rec: ReportRecord) -> None:
        t = rec.time_s
        if rec.kind == "checkpoint":
            self._checkpoint, self._checkpoint_time = rec.path, t
            self._touch(t, report=True)
            return
        if rec.kind == "event":
            return
        changed = False
        if rec.total_epochs is not None:
            self._total_epochs = rec.total_epochs
            self._from_report["epoch"] = changed = True
        if rec.total_steps is not None:
            self._total_steps = rec.total_steps
            self._from_report["step"] = changed = True
        running = self._report_numbering.running(rec.epoch) if rec.epoch is not None else None
        if rec.kind == "epoch_end":
            if running is not None:
                self._epoch = running + 1 if self._total_epochs is None or running < self._total_epochs else running
                self._step = 0 if running < (self._total_epochs or math.inf) else self._step
                self._from_report["epoch"] = True
                self.estimator.epoch_ended(t, running - 1)
                if self._total_epochs is not None:
                    self.estimator.total_epochs = self._total_epochs
            self._take_loss(rec.loss, rec.metrics, report=True)
            self._touch(t, report=True)
            return
        if running is not None:
            if running != self._epoch and rec.step is None:
                self._step = 0
            self._epoch = running
            self._from_report["epoch"] = changed = True
        if rec.kind == "epoch_start":
            self._step = 0
            self._from_report["step"] = changed = True
        if rec.step is not None:
            self._step = rec.step
            self._from_report["step"] = changed = True
        self._take_loss(rec.loss, rec.metrics, report=True)
        if changed or rec.loss is not None or rec.metrics:
            self._touch(t, report=True)
        self.estimator.observe(
            t,
            epoch_index=running - 1 if running is not None else None,
            step=0 if rec.kind == "epoch_start" else rec.step,
            total_steps=rec.total_steps,
            total_epochs=rec.total_epochs,
        )

    # ------------------------------------------------------------------ parsed output

    def add_parsed(self, obs: ParsedProgress, time_s: float) -> None:
        if obs.phase != "train":
            return  # validation, downloads, checkpoint loading: not the training's own steps
        with self._lock:
            if self._bars.is_side_bar(obs):
                return  # an evaluation bar told apart by its length and order: the training ETA stays
            self._add_parsed(obs, time_s)

    def _add_parsed(self, obs: ParsedProgress, t: float) -> None:
        use_epoch = not self._from_report["epoch"]
        use_step = not self._from_report["step"]
        changed = False
        epoch_index = total_epochs = None
        obs_step, obs_total_steps = obs.step, obs.total_steps
        numbering = self._parsed_numbering
        if obs.zero_based:
            numbering.zero_based = True
        if obs.format == "hf":
            self._hf.log(obs, t)
        elif obs.step is not None and obs.format == "tqdm" and obs.epoch is None:
            self._hf.bar(obs.step, obs.total_steps)
        if obs.format == "tqdm" and obs.step is not None and obs.epoch is None and self._hf.active:
            # Hugging Face's one bar over the whole run: global step -> epoch and step within it.
            mapped = self._hf.map_step(obs.step)
            if mapped is not None and use_epoch:
                index, obs_step, obs_total_steps = mapped
                total = self._hf.total_epochs()
                if total is not None:
                    self._total_epochs = total_epochs = total
                self._epoch, epoch_index, changed = index + 1, index, True
        if use_epoch:
            if obs.total_epochs is not None:
                total = obs.total_epochs
                if numbering.zero_based and obs.epoch is not None and obs.epoch == total and not obs.zero_based:
                    total += 1  # "Epoch 3/3" from a source counting from 0: the last index, 4 epochs
                self._total_epochs = total_epochs = total
                changed = True
            if obs.epoch is not None:
                running = numbering.running(obs.epoch)
                if running != self._epoch and obs.step is None and use_step:
                    self._step = 0 if self._steps_within_epoch else None
                self._epoch, epoch_index, changed = running, running - 1, True
            elif obs.epochs_done is not None and math.isfinite(obs.epochs_done):
                if obs.format == "hf":
                    virtual = self._hf.virtual(obs.epochs_done)
                    if virtual is not None:
                        # No step bar (disable_tqdm=True): the fractional epoch is the progress.
                        index, vstep = virtual
                        # A log every few steps is one sample: average over an epoch's worth, not 1/5 of one.
                        self.estimator.window_steps = max(self.estimator.window_steps, _HfEpochs.VIRTUAL_STEPS)
                        total = self._hf.total_epochs()
                        if total is not None and self._total_epochs is None:
                            self._total_epochs = total
                        self._epoch, changed = index + 1, True
                        if self._total_epochs is not None:
                            self._epoch = min(self._epoch, self._total_epochs)
                        e = obs.epochs_done
                        if any(k.startswith("eval_") for k in obs.metrics) and e >= 1 and abs(e - round(e)) < 1e-9:
                            # The evaluation after epoch e has just ended: that is where the epoch ends
                            # (its time counts in the epoch, as the gap after its last step).
                            if self._total_epochs is not None:
                                self.estimator.total_epochs = self._total_epochs
                            self.estimator.epoch_ended(t, int(round(e)) - 1)
                        else:
                            self.estimator.observe(t, epoch_index=index, step=vstep, total_steps=_HfEpochs.VIRTUAL_STEPS,
                                                   total_epochs=self._total_epochs)
                    else:
                        # With a step bar the bar says where the run is; the log only names the epoch.
                        running = max(1, math.ceil(obs.epochs_done))
                        if self._total_epochs is not None:
                            running = min(running, self._total_epochs)
                        if self._epoch is None or not self._hf.mapped:
                            self._epoch, changed = running, True
                else:
                    running = int(obs.epochs_done) + 1
                    if self._total_epochs is not None:
                        running = min(running, self._total_epochs)
                    self._epoch, changed = running, True
                    epoch_index = running - 1
        step = total_steps = None
        if use_step and obs_step is not None and obs.format != "hf":
            if obs_total_steps is None or obs_step < obs_total_steps:
                if obs_step > 0:
                    self._steps_within_epoch = True
            self._step, step, changed = obs_step, obs_step, True
            if obs_total_steps is not None:
                self._total_steps = total_steps = obs_total_steps
        if not self._from_report["loss"]:
            self._take_loss(obs.loss, obs.metrics, report=False)
            changed = changed or obs.loss is not None or bool(obs.metrics)
        if changed:
            self._touch(t, report=False)
        hint = None
        if obs.format == "rich" and obs.rate_steps_per_s and obs.step:
            # Rich redraws a Live display a few times a second and its output reaches us in bursts:
            # its own speed column says more about the step time than the arrival times do.
            hint = 1.0 / obs.rate_steps_per_s
        if epoch_index is not None or step is not None or total_epochs is not None:
            self.estimator.observe(t, epoch_index=epoch_index, step=step, total_steps=total_steps, total_epochs=total_epochs,
                                   step_s_hint=hint)

    # ------------------------------------------------------------------ the process

    def pause(self, time_s: float) -> None:
        """The training was paused (SIGSTOP): the ETA stops running down and the pause is not step time."""
        with self._lock:
            self.estimator.pause(time_s)

    def resume(self, time_s: float) -> None:
        with self._lock:
            self.estimator.resume(time_s)

    def end(self, time_s: float, outcome: str = "finished") -> None:
        """The process exited: snapshots show ``outcome`` and the total time, no ETA."""
        with self._lock:
            self.estimator.end(time_s, outcome)

    # ------------------------------------------------------------------ shared

    def _take_loss(self, loss: float | None, metrics: Mapping[str, float], *, report: bool) -> None:
        if report and (loss is not None or metrics):
            self._from_report["loss"] = True
        if loss is not None:
            self._loss = loss
        if metrics:
            self._metrics.update(metrics)

    def _touch(self, t: float, *, report: bool) -> None:
        if report:
            self._any_report = True
        else:
            self._any_parsed = True
        self._updated = t if self._updated is None else max(self._updated, t)

    def snapshot(self, now: float | None = None) -> ProgressSnapshot:
        now = time.time() if now is None else now
        with self._lock:
            source = "report" if self._any_report else ("parsed" if self._any_parsed else None)
            return ProgressSnapshot(
                epoch=self._epoch,
                total_epochs=self._total_epochs,
                step=self._step,
                total_steps=self._total_steps,
                loss=self._loss,
                metrics=self._metrics,
                last_checkpoint=self._checkpoint,
                last_checkpoint_time=self._checkpoint_time,
                source=source,
                updated_time=self._updated,
                eta=self.estimator.estimate(now),
            )
