"""Remaining time of a training run, per step and per epoch, robust to warm-up and to slow steps.

The method (docs/progress.md explains it with examples):

1. **Warm-up is not a step time.** The interval that contains the first step of the run
   or of an epoch (process start, CUDA init, DataLoader workers spawning, a cold cache)
   is kept apart: it is not a step sample. Where it recurs every epoch, its excess over a
   normal step is counted as a per-epoch cost ("start excess"), measured on epochs after
   the first (the first epoch's also holds the one-time start-up).
2. **Seconds per batch** is the mean over the most recent ``window_steps`` steps after
   warm-up, weighted by steps. A mean (not a median) because occasional slow steps (a
   checkpoint save, a garbage collection) are part of what the rest of the run will cost;
   a long window keeps one slow step from moving it much.
3. **Per epoch**: an epoch is predicted as ``start excess + steps_per_epoch x seconds per
   batch + end gap``, where the end gap is the measured time between an epoch's last step
   and the next epoch's start (validation, checkpointing), median over completed epochs.
   Without step figures (only ``Epoch 4/15`` lines), an epoch is predicted as the mean of
   completed epochs, leaving out the first (warm-up) once a later one is complete.
4. **Remaining** = the rest of the running epoch + every epoch after it. The running
   epoch counts in full in ``epochs_left``: at the start of epoch 4 of 15, 3 are done
   and 12 are left (seed 000: 12 x 3.23 h = 38.8 h). Between two observations the
   remaining time runs down with the clock, but never below what the epochs after the
   running one will take.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

__all__ = ["EtaEstimate", "EtaEstimator", "EpochTiming", "naive_remaining_s"]


def _clean(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@dataclass(frozen=True)
class EtaEstimate:
    """What the ETA estimator concluded at ``computed_time``. Unknown figures are None.

    ``epochs_done`` counts completed epochs; ``epochs_left`` counts the running one too.
    ``method`` is ``steps`` (step times, per-epoch costs), ``epochs`` (epoch durations only)
    or ``none``. Times are wall-clock seconds (``time.time()``).
    """

    remaining_s: float | None = None
    finish_time: float | None = None
    epoch_remaining_s: float | None = None
    step_s: float | None = None
    avg_epoch_s: float | None = None
    epoch_estimate_s: float | None = None
    epochs_done: int | None = None
    epochs_left: int | None = None
    fraction_done: float | None = None
    method: str = "none"
    computed_time: float | None = None
    # "running", "paused", or how the run ended: "finished", "stopped", "failed". Once it
    # ended there is no ETA and no finish time; ``training_s`` is then the run's total.
    state: str = "running"
    ended_time: float | None = None
    training_s: float | None = None  # since the process started, paused time left out
    paused_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EtaEstimate":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EpochTiming:
    """A completed epoch as the estimator measured it."""

    index: int  # 0-based
    duration_s: float | None  # None when its start was not seen
    steps: int | None
    start_excess_s: float | None  # warm-up interval beyond a normal step
    end_gap_s: float | None  # last step to the epoch's end (validation, checkpoint)
    step_s: float | None  # its own mean post-warm-up step time


class EtaEstimator:
    """Feed it observations in time order; ask ``estimate(now)`` whenever a figure is needed.

    ``epoch_index`` is 0-based (the running epoch; equal to the number of completed epochs);
    ``step`` counts the steps done in the running epoch. Callers convert from what the
    script printed (:class:`~cachewatch.engine.training.progress.ProgressTracker` does).
    """

    def __init__(self, *, window_steps: int = 200) -> None:
        self.window_steps = max(1, int(window_steps))
        self.total_epochs: int | None = None
        self.total_steps: int | None = None  # per epoch, as the source says
        self.epochs: list[EpochTiming] = []
        self._samples: deque[tuple[float, int, int]] = deque()  # (seconds, steps, epoch index)
        self._window_time = 0.0
        self._window_n = 0
        self._epoch: int | None = None
        self._epoch_start: float | None = None
        self._step: int | None = None
        self._step_time: float | None = None  # time of the last step advance
        self._last_time: float | None = None
        self._warmup: tuple[float, int] | None = None  # this epoch's first interval
        self._epoch_sum = (0.0, 0)
        self._saw_reset = False
        self._saw_epoch = False
        self._started: float | None = None
        self._paused_at: float | None = None
        self._paused_total = 0.0
        self._ended: tuple[float, str] | None = None
        self._peak = 0
        self._step_hint: float | None = None
        self._first_epoch_index: int | None = None

    # ------------------------------------------------------------------ input

    def start(self, time_s: float) -> None:
        """The run (process) started at ``time_s``: the first epoch starts here, at step 0."""
        if self._started is None:
            self._started = time_s
        if self._epoch is None and self._last_time is None:
            self._epoch, self._epoch_start, self._step, self._step_time = 0, time_s, 0, time_s
            self._last_time = time_s

    def pause(self, time_s: float) -> None:
        """The training was stopped (SIGSTOP) at ``time_s``: the clock stops for the estimate."""
        if self._paused_at is None and self._ended is None and math.isfinite(time_s):
            self._paused_at = time_s

    def resume(self, time_s: float) -> None:
        """The training runs again. The pause is cut out of every interval it fell into, so a
        13 s pause neither counts as step time nor eats into the remaining time."""
        if self._paused_at is None or not math.isfinite(time_s):
            return
        d = max(0.0, time_s - self._paused_at)
        self._paused_at = None
        self._paused_total += d
        if self._epoch_start is not None:
            self._epoch_start += d
        if self._step_time is not None:
            self._step_time += d
        if self._last_time is not None:
            self._last_time += d

    def end(self, time_s: float, outcome: str = "finished") -> None:
        """The process exited (``finished``, ``stopped``, ``failed``): no ETA from now on."""
        if self._ended is None and math.isfinite(time_s):
            if self._paused_at is not None:
                self.resume(time_s)
            self._ended = (time_s, outcome)

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def observe(
        self,
        time_s: float,
        *,
        epoch_index: int | None = None,
        step: int | None = None,
        total_steps: int | None = None,
        total_epochs: int | None = None,
        step_s_hint: float | None = None,
    ) -> None:
        """``step_s_hint``: the source's own seconds per step (Rich's speed column), preferred to
        arrival times where output comes in bursts (a Live display refreshed a few times a second)."""
        if not math.isfinite(time_s):
            return
        if step_s_hint is not None and math.isfinite(step_s_hint) and step_s_hint > 0:
            self._step_hint = step_s_hint
        if total_epochs is not None and total_epochs > 0:
            self.total_epochs = total_epochs
        if total_steps is not None and total_steps > 0:
            self.total_steps = total_steps
        if epoch_index is not None:
            self._saw_epoch = True
            if self._epoch is None:
                self._epoch = epoch_index
                if step in (None, 0):
                    self._epoch_start, self._step, self._step_time = time_s, 0, time_s
            elif epoch_index == self._epoch and step in (None, 0) and self._untouched():
                # "Epoch 1/N" printed after the imports: the epoch starts here, not at process start
                # (Keras verbose=2 was timed from process start, 51-70 % too long).
                self._epoch_start, self._step, self._step_time = time_s, 0, time_s
            elif epoch_index > self._epoch:
                boundary = time_s
                if step and self._step_time is not None:
                    step_s = self.step_s()
                    if step_s is not None:
                        boundary = max(self._step_time, time_s - step * step_s)
                self._close_epoch(boundary, next_index=epoch_index)
                if step in (None, 0):
                    self._step, self._step_time = 0, time_s
            elif epoch_index < self._epoch:
                # Counting went backwards: a restarted or resumed run. Epoch history no longer applies.
                self.epochs = [e for e in self.epochs if e.index < epoch_index]
                self._begin_epoch(epoch_index, time_s if step in (None, 0) else None)
                if step in (None, 0):
                    self._step, self._step_time = 0, time_s
        if step is not None:
            self._observe_step(time_s, step)
        self._last_time = time_s if self._last_time is None else max(self._last_time, time_s)

    def _untouched(self) -> bool:
        """No step of the running epoch has been seen yet (nor any completed epoch)."""
        return not self.epochs and self._step in (None, 0) and self._warmup is None and self._epoch_sum[1] == 0

    def epoch_ended(self, time_s: float, epoch_index: int) -> None:
        """Epoch ``epoch_index`` (0-based) is complete at ``time_s``; the next one starts now."""
        if not math.isfinite(time_s):
            return
        self._saw_epoch = True
        if self._epoch is None:
            self._epoch = epoch_index
        if epoch_index >= self._epoch:
            if epoch_index > self._epoch:
                self._begin_epoch(epoch_index, None)
            self._close_epoch(time_s, next_index=epoch_index + 1)
            self._step, self._step_time = 0, time_s
        self._last_time = time_s if self._last_time is None else max(self._last_time, time_s)

    def _observe_step(self, t: float, step: int) -> None:
        if self._epoch is None:
            self._epoch = 0
        if self._step is None or self._step_time is None:
            self._step, self._step_time = step, t
            return
        if step < self._step:
            # The bar started again without an epoch number: a new epoch, or a new bar.
            self._peak = max(self._peak, self._step)
            self._saw_reset = True
            if not self._saw_epoch:
                self._close_epoch(self._last_time or t, next_index=self._epoch + 1)
            self._step, self._step_time = step, t
            if step == 0:
                self._step_time = t
            return
        if step == self._step:
            return
        d, n = t - self._step_time, step - self._step
        if d < 0:
            return
        if self._step == 0 and self._warmup is None:
            self._warmup = (d, n)
        else:
            self._add_sample(d, n)
            s, c = self._epoch_sum
            self._epoch_sum = (s + d, c + n)
        self._step, self._step_time = step, t

    def _add_sample(self, d: float, n: int) -> None:
        epoch = self._epoch if self._epoch is not None else 0
        self._samples.append((d, n, epoch))
        self._window_time += d
        self._window_n += n
        while self._samples and self._window_n - self._samples[0][1] >= self.window_steps:
            self._drop_oldest()
        # The first epoch runs slower than the rest beyond its first step (lazy initialisation,
        # caches warming): once half an epoch of later steps is in the window, it leaves it,
        # as it leaves the epoch average.
        first = self._samples[0][2] if self._samples else None
        if first is not None and epoch > first and self._first_epoch_index in (None, first):
            self._first_epoch_index = first
            later = sum(sn for _, sn, se in self._samples if se != first)
            spe = self.steps_per_epoch() or 0
            if spe and later >= spe / 2:
                while self._samples and self._samples[0][2] == first:
                    self._drop_oldest()

    def _drop_oldest(self) -> None:
        od, on, _ = self._samples.popleft()
        self._window_time -= od
        self._window_n -= on

    def _begin_epoch(self, index: int, start: float | None) -> None:
        self._epoch, self._epoch_start = index, start
        self._warmup, self._epoch_sum = None, (0.0, 0)
        self._step = self._step_time = None
        self._peak = 0

    def _close_epoch(self, boundary: float, *, next_index: int) -> None:
        assert self._epoch is not None
        sum_d, sum_n = self._epoch_sum
        own_step_s = sum_d / sum_n if sum_n else self.step_s()
        # Lightning redraws its bar at 0 before the next epoch's description: the epoch's
        # length is the highest step it reached, not where the bar stood at the boundary.
        steps = max(self._step or 0, self._peak) or None
        duration = boundary - self._epoch_start if self._epoch_start is not None else None
        excess = None
        if self._warmup is not None and own_step_s is not None:
            excess = max(0.0, self._warmup[0] - self._warmup[1] * own_step_s)
        end_gap = None
        if self._step_time is not None and self._step:
            missing = (self.total_steps - self._step) if self.total_steps else 0
            unexplained = missing * own_step_s if (missing > 0 and own_step_s) else 0.0
            end_gap = max(0.0, boundary - self._step_time - unexplained)
        if duration is not None and duration < 0:
            duration = None
        self.epochs.append(EpochTiming(self._epoch, duration, steps, excess, end_gap, own_step_s))
        if len(self.epochs) > 1000:
            del self.epochs[1:-999]  # keep the first (warm-up) and the recent ones
        if next_index > self._epoch + 1:
            self._begin_epoch(next_index, None)  # epochs in between were not seen
        else:
            self._begin_epoch(next_index, boundary)

    # ------------------------------------------------------------------ output

    def step_s(self) -> float | None:
        """Seconds per step: mean of the recent post-warm-up window (or the source's own figure)."""
        if self._step_hint is not None:
            return self._step_hint
        if self._window_n <= 0:
            return None
        return self._window_time / self._window_n

    def steps_per_epoch(self) -> int | None:
        if self.total_steps:
            return self.total_steps
        for e in reversed(self.epochs):
            if e.steps:
                return e.steps
        return None

    def avg_epoch_s(self) -> float | None:
        """Mean duration of completed epochs, leaving out the first once a later one is complete."""
        known = [e for e in self.epochs if e.duration_s is not None]
        if len(known) > 1 and known[0].index == min(e.index for e in self.epochs):
            known = known[1:]
        recent = [e.duration_s for e in known[-10:]]
        return statistics.fmean(recent) if recent else None  # type: ignore[arg-type]

    def estimate(self, now: float) -> EtaEstimate:
        wall_now = now
        state = "running"
        if self._ended is not None:
            now, state = self._ended
        elif self._paused_at is not None:
            now, state = self._paused_at, "paused"  # the clock stands still while paused
        est = self._estimate(now)
        paused_s = self._paused_total + (wall_now - self._paused_at if self._paused_at is not None else 0.0)
        training_s = None
        if self._started is not None:
            training_s = max(0.0, now - self._started - self._paused_total)
        if self._ended is not None:
            return replace(est, remaining_s=None, finish_time=None, epoch_remaining_s=None, state=state,
                           ended_time=self._ended[0], training_s=training_s, paused_s=self._paused_total,
                           computed_time=wall_now)
        finish = _clean(wall_now + est.remaining_s) if est.remaining_s is not None else None
        return replace(est, finish_time=finish, state=state, training_s=training_s, paused_s=paused_s,
                       computed_time=wall_now)

    def _estimate(self, now: float) -> EtaEstimate:
        step_s = self.step_s()
        steps_per_epoch = self.steps_per_epoch()
        avg_epoch = self.avg_epoch_s()
        done = self._epoch
        total_epochs = self.total_epochs
        if total_epochs is None and not self._saw_epoch and not self._saw_reset and done is not None and done == 0 and steps_per_epoch:
            total_epochs = 1  # one bar, never restarted, no epochs mentioned: the bar is the run
        step = self._step or 0

        epoch_pred = cur_remaining = None
        method = "none"
        if step_s is not None and steps_per_epoch:
            later = [e.start_excess_s for e in self.epochs[1:] if e.start_excess_s is not None]
            if self.epochs and self.epochs[0].index > 0 and self.epochs[0].start_excess_s is not None:
                later.insert(0, self.epochs[0].start_excess_s)  # we joined mid-run: no one-time start-up in it
            gaps = [e.end_gap_s for e in self.epochs if e.end_gap_s is not None]
            start_excess = statistics.median(later) if later else 0.0
            end_gap = statistics.median(gaps) if gaps else 0.0
            if self._step_hint is not None and avg_epoch is not None:
                # A source read in bursts (Rich) gives no usable gaps between its steps' arrivals;
                # the epochs' own boundaries do: what an epoch takes beyond its steps is its overhead.
                start_excess, end_gap = 0.0, max(0.0, avg_epoch - steps_per_epoch * step_s)
            epoch_pred = start_excess + steps_per_epoch * step_s + end_gap
            cur_remaining = max(0, steps_per_epoch - step) * step_s + end_gap
            if step == 0 and self._warmup is None:
                cur_remaining += start_excess  # this epoch's own start-up is still ahead
            since = now - self._step_time if self._step_time is not None else 0.0
            cur_remaining = max(0.0, cur_remaining - max(0.0, since))
            method = "steps"
        elif avg_epoch is not None:
            epoch_pred = avg_epoch
            elapsed = now - self._epoch_start if self._epoch_start is not None else 0.0
            cur_remaining = max(0.0, avg_epoch - max(0.0, elapsed))
            method = "epochs"

        if done is not None and total_epochs is not None and done >= total_epochs:
            cur_remaining = 0.0  # the last epoch has ended: the run is finishing, not training
        remaining = epochs_left = fraction = None
        if done is not None and total_epochs is not None:
            epochs_left = max(0, total_epochs - done)
            if cur_remaining is not None and epoch_pred is not None:
                remaining = cur_remaining + max(0, total_epochs - done - 1) * epoch_pred
            if steps_per_epoch:
                fraction = min(1.0, (done * steps_per_epoch + min(step, steps_per_epoch)) / (total_epochs * steps_per_epoch))
            elif epoch_pred and cur_remaining is not None:
                fraction = min(1.0, (done + max(0.0, 1 - cur_remaining / epoch_pred)) / total_epochs)
            else:
                fraction = min(1.0, done / total_epochs)
        return EtaEstimate(
            remaining_s=_clean(remaining),
            finish_time=_clean(now + remaining) if remaining is not None else None,
            epoch_remaining_s=_clean(cur_remaining),
            step_s=_clean(step_s),
            avg_epoch_s=_clean(avg_epoch),
            epoch_estimate_s=_clean(epoch_pred),
            epochs_done=done,
            epochs_left=epochs_left,
            fraction_done=fraction,
            method=method,
            computed_time=now,
        )


def naive_remaining_s(elapsed_s: float, fraction_done: float) -> float | None:
    """The hand method the estimator is compared against: elapsed time scaled by progress."""
    if fraction_done <= 0:
        return None
    return elapsed_s / fraction_done * (1.0 - fraction_done)
