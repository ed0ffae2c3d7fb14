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
            self._add_parsed(obs, time_s)

    def _add_parsed(self, obs: ParsedProgress, t: float) -> None:
        use_epoch = not self._from_report["epoch"]
        use_step = not self._from_report["step"]
        changed = False
        epoch_index = total_epochs = None
        if use_epoch:
            if obs.total_epochs is not None:
                self._total_epochs = total_epochs = obs.total_epochs
                changed = True
            if obs.epoch is not None:
                running = self._parsed_numbering.running(obs.epoch)
                if running != self._epoch and obs.step is None and use_step:
                    self._step = 0
                self._epoch, epoch_index, changed = running, running - 1, True
            elif obs.epochs_done is not None and math.isfinite(obs.epochs_done):
                if obs.format == "hf":
                    # Trainer's 'epoch': 1.5 is epochs elapsed; 2.0 at the very end means epoch 2 just ended.
                    running = max(1, math.ceil(obs.epochs_done))
                else:
                    running = int(obs.epochs_done) + 1
                if self._total_epochs is not None:
                    running = min(running, self._total_epochs)
                self._epoch, changed = running, True
                if obs.format != "hf":
                    # Hugging Face's fractional epoch goes with a global step bar, not one per epoch.
                    epoch_index = running - 1
        step = total_steps = None
        if use_step and obs.step is not None:
            self._step, step, changed = obs.step, obs.step, True
            if obs.total_steps is not None:
                self._total_steps = total_steps = obs.total_steps
        if not self._from_report["loss"]:
            self._take_loss(obs.loss, obs.metrics, report=False)
            changed = changed or obs.loss is not None or bool(obs.metrics)
        if changed:
            self._touch(t, report=False)
        if epoch_index is not None or step is not None or total_epochs is not None:
            self.estimator.observe(t, epoch_index=epoch_index, step=step, total_steps=total_steps, total_epochs=total_epochs)

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
