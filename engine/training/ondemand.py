"""On-demand cache building during training (seed 004): the rule, as pure functions over figures.

A training that reads a managed cache should miss only while the cache is being built.
When misses keep coming after the first epoch, or the share of reads that miss stays
high for minutes, the items are being computed *during* training (a partial cache, a
cache directory the code does not use, a cache too small for the data set): 27 s a batch
instead of 2-3 s in the seed. The fix is to build the cache first (``cachewatch build``)
and refuse to start on an incomplete one (``[run] preflight = "require"``).

The engine samples the cache's cumulative ``hits``/``misses`` and the training's step
count on its check tick and hands them to :class:`OnDemandBuildDetector`; the decision
itself is :func:`judge_on_demand_build`, a pure function of those samples.

The slowdown is estimated from the samples themselves: over windows with different
shares of misses, seconds per step is fitted against misses per step (least squares,
weighted by steps). The intercept is the step time without misses; the slowdown is the
recent step time over it. Where every window missed alike, the slowdown is unknown and
the alert says so rather than guess.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

__all__ = ["CacheCounterSample", "OnDemandBuild", "OnDemandBuildDetector", "judge_on_demand_build", "sample_from", "REMEDIES"]

REMEDIES = (
    "build the cache before training: `cachewatch build`",
    'refuse to start on an incomplete cache: [run] preflight = "require"',
    "check that the training reads the cache root cachewatch manages (not a sibling such as cache/tusz beside cache/train)",
)


@dataclass(frozen=True)
class CacheCounterSample:
    """The cache's cumulative counters and the training's position at ``time_s``."""

    time_s: float
    hits: int
    misses: int
    epoch: int | None = None  # running epoch, from 1
    steps_done: int | None = None  # steps since the run started, any counting that only grows


@dataclass(frozen=True)
class OnDemandBuild:
    """The finding: figures for the alert and the text people read."""

    misses_per_min: float
    miss_share: float  # of reads in the window
    window_s: float
    epoch: int | None
    after_first_epoch: bool
    slowdown: float | None  # recent step time / step time without misses
    step_s: float | None
    step_s_without_misses: float | None
    figures: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "figures", MappingProxyType(dict(self.figures)))

    @property
    def title(self) -> str:
        return "The cache is being built during training"

    @property
    def text(self) -> str:
        where = f"in epoch {self.epoch}" if self.after_first_epoch and self.epoch else "for minutes"
        s = (f"{self.misses_per_min:.0f} cache misses a minute {where} "
             f"({self.miss_share * 100:.0f} % of reads): items are computed on demand")
        if self.slowdown is not None and self.step_s is not None and self.step_s_without_misses is not None:
            s += (f"; about {self.slowdown:.1f}x slower ({self.step_s:.3g} s/step, "
                  f"{self.step_s_without_misses:.3g} s/step without misses)")
        else:
            s += "; slowdown not measurable yet (every window missed alike)"
        return s

    @property
    def remedies(self) -> tuple[str, ...]:
        return REMEDIES


def _fit_step_cost(windows: Sequence[tuple[float, int, int]]) -> tuple[float, float] | None:
    """Least squares of seconds/step against misses/step over (dt, steps, misses) windows, weighted by steps.

    Returns (seconds per step without misses, seconds per miss), or None when the windows'
    miss shares do not differ enough to tell the two apart.
    """
    pts = [(m / n, dt / n, n) for dt, n, m in windows if n > 0 and dt >= 0]
    w = sum(p[2] for p in pts)
    if len(pts) < 3 or w <= 0:
        return None
    mx = sum(x * n for x, _, n in pts) / w
    my = sum(y * n for _, y, n in pts) / w
    sxx = sum(n * (x - mx) ** 2 for x, _, n in pts)
    if sxx <= 0:
        return None
    xs = [x for x, _, _ in pts]
    if max(xs) - min(xs) < 0.25 * max(max(xs), 1e-9):
        return None  # all windows missed alike: the intercept would be an extrapolation
    b = sum(n * (x - mx) * (y - my) for x, y, n in pts) / sxx
    a = my - b * mx
    if a <= 0 or b <= 0:
        return None
    return a, b


def judge_on_demand_build(
    samples: Sequence[CacheCounterSample],
    *,
    window_s: float = 120.0,
    min_misses: int = 20,
    share_threshold: float = 0.2,
) -> OnDemandBuild | None:
    """The finding, or None. ``samples`` in time order, counters cumulative.

    Raised when, over the last ``window_s``, at least ``min_misses`` misses came and either
    the training is past its first epoch (a built cache no longer misses) or at least
    ``share_threshold`` of the reads missed over the whole window (so a cold start of a few
    seconds is not enough). Counters that went down (a new index) start the window again.
    """
    if len(samples) < 2:
        return None
    # The window: from the newest sample back to the first one at least window_s old, after any reset.
    end = samples[-1]
    start_i = len(samples) - 1
    for i in range(len(samples) - 1, 0, -1):
        a, b = samples[i - 1], samples[i]
        if b.hits < a.hits or b.misses < a.misses:
            break  # counters reset
        start_i = i - 1
        if end.time_s - samples[start_i].time_s >= window_s:
            break
    start = samples[start_i]
    span = end.time_s - start.time_s
    if span < window_s * 0.9:
        return None  # not watched long enough to say "keep coming"
    misses = end.misses - start.misses
    hits = end.hits - start.hits
    if misses < min_misses:
        return None
    share = misses / max(1, misses + hits)
    after_first = end.epoch is not None and end.epoch >= 2 and start.epoch is not None and start.epoch >= 2
    if not after_first and share < share_threshold:
        return None
    windows: list[tuple[float, int, int]] = []
    for a, b in zip(samples[start_i:], samples[start_i + 1:]):
        if a.steps_done is None or b.steps_done is None or b.misses < a.misses or b.steps_done < a.steps_done:
            continue
        windows.append((b.time_s - a.time_s, b.steps_done - a.steps_done, b.misses - a.misses))
    fit = _fit_step_cost(windows)
    step_s = base = slowdown = None
    steps = sum(n for _, n, _ in windows)
    if steps > 0:
        step_s = sum(dt for dt, _, _ in windows) / steps  # the step time over the judged window
    if fit is not None and step_s is not None:
        base = fit[0]
        slowdown = max(1.0, step_s / base)
    per_min = misses / span * 60.0
    figures = {
        "misses_per_min": round(per_min, 1), "miss_share": round(share, 3), "window_s": round(span, 1),
        "misses_in_window": misses, "hits_in_window": hits, "epoch": end.epoch,
        "slowdown": None if slowdown is None else round(slowdown, 2),
        "step_s": None if step_s is None else round(step_s, 4),
        "step_s_without_misses": None if base is None else round(base, 4),
        "seconds_per_miss": None if fit is None else round(fit[1], 4),
    }
    return OnDemandBuild(per_min, share, span, end.epoch, after_first, slowdown, step_s, base, figures)


class OnDemandBuildDetector:
    """Keeps the recent samples of one training attempt; :meth:`observe` returns the finding or None."""

    def __init__(self, *, window_s: float = 120.0, min_misses: int = 20, share_threshold: float = 0.2,
                 keep_s: float = 1800.0) -> None:
        self.window_s, self.min_misses, self.share_threshold = window_s, min_misses, share_threshold
        self.keep_s = max(keep_s, 2 * window_s)
        self.samples: deque[CacheCounterSample] = deque()

    def reset(self) -> None:
        self.samples.clear()

    def observe(self, sample: CacheCounterSample) -> OnDemandBuild | None:
        if self.samples and sample.time_s <= self.samples[-1].time_s:
            return None
        self.samples.append(sample)
        while self.samples and sample.time_s - self.samples[0].time_s > self.keep_s:
            self.samples.popleft()
        return judge_on_demand_build(list(self.samples), window_s=self.window_s, min_misses=self.min_misses,
                                     share_threshold=self.share_threshold)


def sample_from(time_s: float, hits: int, misses: int, progress: Any) -> CacheCounterSample:
    """A sample from cache counters and a progress snapshot (or None): steps counted across epochs."""
    epoch = getattr(progress, "epoch", None)
    step = getattr(progress, "step", None)
    per_epoch = getattr(progress, "total_steps", None)
    steps_done = None
    if epoch is not None and step is not None and per_epoch:
        steps_done = (epoch - 1) * per_epoch + min(step, per_epoch)
    elif step is not None and epoch is None:
        steps_done = step
    return CacheCounterSample(time_s, hits, misses, epoch, steps_done)
