"""Growth of a watched directory and the alerts it raises.

Sizes are sampled about once a second. The *growth* rate is the slope of the
size over the last ``window_s`` (a least-squares line, so the saw-tooth of
evictions does not swing it); the *write* rate adds back what was evicted, i.e.
what the writers produce. Time to max and time to a full disk follow from the
growth rate. A cache kept under max by eviction stops growing at max, so the
disk only fills first when it has less free space than the cache has left to
grow; then the time to disk full is reported, else it is None.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

__all__ = ["GrowthTracker", "GrowthEstimate", "WatchAlert", "alerts_for"]


@dataclass(frozen=True)
class GrowthEstimate:
    growth_bytes_per_min: float | None
    write_bytes_per_min: float | None
    time_to_max_s: float | None
    time_to_disk_full_s: float | None
    window_s: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WatchAlert:
    """One condition worth a person's attention; ``kind`` is stable, ``message`` is for humans."""

    kind: str  # over_max, eviction_blocked, max_soon, disk_full_soon, events_lost, root_gone
    level: str  # info, warning, critical
    message: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "WatchAlert":
        return cls(str(d["kind"]), str(d["level"]), str(d["message"]))


def _slope(points: list[tuple[float, float]]) -> float | None:
    n = len(points)
    if n < 3:
        return None
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den <= 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / den


class GrowthTracker:
    """Samples of (time, size, evicted so far); rates over a sliding window."""

    def __init__(self, window_s: float = 60.0, min_span_s: float = 5.0) -> None:
        self.window_s = float(window_s)
        self.min_span_s = min(float(min_span_s), self.window_s)
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, t: float, size_bytes: int, evicted_bytes: int) -> None:
        self._samples.append((t, size_bytes, evicted_bytes))
        while self._samples and self._samples[0][0] < t - self.window_s:
            self._samples.popleft()

    def reset(self) -> None:
        self._samples.clear()

    def estimate(self, size_bytes: int, max_bytes: int, disk_free_bytes: int | None, enforcing: bool) -> GrowthEstimate:
        pts = list(self._samples)
        growth = write = None
        if pts and pts[-1][0] - pts[0][0] >= self.min_span_s:
            g = _slope([(t, s) for t, s, _ in pts])
            w = _slope([(t, s + e) for t, s, e in pts])
            growth = None if g is None else g * 60.0
            write = None if w is None else max(0.0, w * 60.0)
        to_max = to_full = None
        if growth is not None and growth > 0:
            per_s = growth / 60.0
            to_max = 0.0 if size_bytes >= max_bytes else (max_bytes - size_bytes) / per_s
            if disk_free_bytes is not None:
                capped = enforcing and disk_free_bytes > max(0, max_bytes - size_bytes)
                to_full = None if capped else disk_free_bytes / per_s
        return GrowthEstimate(growth, write, to_max, to_full, self.window_s)


def alerts_for(
    *,
    size_bytes: int,
    max_bytes: int,
    dry_run: bool,
    growth: GrowthEstimate,
    horizon_s: float,
    blocked_files: int,
    events_ok: bool,
    root_ok: bool,
    watching: bool = True,
) -> tuple[WatchAlert, ...]:
    from ..sizes import format_duration, format_size

    out: list[WatchAlert] = []
    if not root_ok:
        out.append(WatchAlert("root_gone", "critical", "the watched directory was removed or replaced; nothing is evicted"))
    if size_bytes > max_bytes:
        if dry_run:
            out.append(WatchAlert("over_max", "warning", f"{format_size(size_bytes, binary=False)} is over max {format_size(max_bytes, binary=False)} (dry run: nothing is evicted)"))
        elif blocked_files:
            out.append(WatchAlert("eviction_blocked", "warning",
                                  f"over max, and {blocked_files} least recently used files are too new or open for writing"))
        else:
            out.append(WatchAlert("over_max", "info", f"{format_size(size_bytes, binary=False)} is over max {format_size(max_bytes, binary=False)}; evicting"))
    elif growth.time_to_max_s is not None and growth.time_to_max_s < horizon_s:
        out.append(WatchAlert("max_soon", "info", f"max reached in {format_duration(growth.time_to_max_s)} at the current growth rate"))
    if growth.time_to_disk_full_s is not None and growth.time_to_disk_full_s < horizon_s:
        out.append(WatchAlert("disk_full_soon", "critical", f"disk full in {format_duration(growth.time_to_disk_full_s)} at the current growth rate"))
    if watching and not events_ok:
        out.append(WatchAlert("events_lost", "warning", "filesystem events are not being received; sizes are corrected by periodic scans only"))
    return tuple(out)
