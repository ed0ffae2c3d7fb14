"""Text pieces the panels are drawn with: sizes, times, gauges with marks, sparklines.

Pure functions of their arguments (no clock, no I/O), so a panel renders the same
snapshot the same way every time; "now" is always the snapshot's own time.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Sequence

from rich.text import Text

from cachewatch.engine.sizes import format_duration, format_size

__all__ = [
    "size",
    "gib",
    "percent",
    "duration",
    "clock",
    "finish_time",
    "ago",
    "gauge",
    "sparkline",
    "shorten_path",
    "shorten",
    "pack",
    "one_line",
]

_SPARK = "▁▂▃▄▅▆▇█"


def size(n: int | float | None) -> str:
    """Decimal units, as people write limits in the config (``max_size = "100GB"``)."""
    return "--" if n is None else format_size(n, binary=False)


def gib(n: int | float | None) -> str:
    """Binary units, as nvidia-smi and CUDA's OOM message print GPU memory."""
    return "--" if n is None else format_size(n, binary=True)


def percent(fraction: float | None) -> str:
    if fraction is None or math.isnan(fraction):
        return "--"
    return f"{fraction * 100:.0f}%"


def duration(seconds: float | None) -> str:
    return format_duration(seconds)


def clock(t: float | None) -> str:
    """Local wall-clock time, ``HH:MM:SS``."""
    if t is None:
        return "--:--:--"
    return _dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def finish_time(t: float | None, now: float) -> str:
    """When something ends: the time today, with the date when it is another day (seed 000: "21 Dec 00:54")."""
    if t is None:
        return "--"
    when = _dt.datetime.fromtimestamp(t)
    today = _dt.datetime.fromtimestamp(now).date()
    if when.date() == today:
        return when.strftime("%H:%M")
    return when.strftime("%a %d %b %H:%M")


def ago(t: float | None, now: float) -> str:
    if t is None:
        return "--"
    return format_duration(max(0.0, now - t)) + " ago"


def gauge(width: int, value: float, maximum: float, *, mark: float | None = None, style: str = "green",
          over_style: str = "bold red", empty_style: str = "grey37", mark_style: str = "bold yellow") -> Text:
    """A bar ``width`` cells wide for ``value`` of ``maximum``, with ``mark`` (the target) drawn as ``┃``.

    A value above the maximum fills the bar in ``over_style``: the cache over its limit must
    not look like a full but healthy one.
    """
    width = max(1, width)
    text = Text()
    if maximum <= 0:
        text.append("░" * width, empty_style)
        return text
    fraction = value / maximum
    filled = min(width, int(round(min(1.0, max(0.0, fraction)) * width)))
    fill_style = over_style if value > maximum else style
    mark_at = None
    if mark is not None and 0 < mark < maximum:
        mark_at = min(width - 1, int(mark / maximum * width))
    for i in range(width):
        if i == mark_at:
            text.append("┃", mark_style)
        elif i < filled:
            text.append("█", fill_style)
        else:
            text.append("░", empty_style)
    return text


def sparkline(values: Sequence[float | None], width: int, *, maximum: float | None = None, style: str = "cyan") -> Text:
    """The last ``width`` values as block characters; missing values are blanks.

    With ``maximum`` the scale is fixed (GPU utilization: 0-100); without it the series is
    scaled to its own range, so a cache that moves between 9.0 and 10.0 GB still shows its
    saw-tooth of evictions.
    """
    width = max(0, width)
    tail = list(values)[-width:] if width else []
    known = [v for v in tail if v is not None]
    text = Text(" " * (width - len(tail)))
    if not known:
        text.append(" " * len(tail))
        return text
    hi = maximum if maximum is not None else max(known)
    lo = 0.0 if maximum is not None else min(known)
    span = hi - lo
    chars = []
    for v in tail:
        if v is None:
            chars.append(" ")
            continue
        if span <= 0:
            idx = len(_SPARK) - 1 if hi > 0 else 0
        else:
            idx = int((min(max(v, lo), hi) - lo) / span * (len(_SPARK) - 1) + 0.5)
        chars.append(_SPARK[idx])
    text.append("".join(chars), style)
    return text


def shorten(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return "…"
    return text[: width - 1] + "…"


def shorten_path(path: str, width: int) -> str:
    """Keep the end of a path, which names it: ``…/aplantida-ml/image_cache``."""
    if len(path) <= width:
        return path
    if width <= 1:
        return "…"[:width]
    return "…" + path[-(width - 1):]


def pack(items: Sequence[Text | str], width: int, *, sep: str = " · ") -> list[Text]:
    """Items on as few lines as fit ``width``, never split inside an item (a figure stays whole)."""
    lines: list[Text] = []
    current: Text | None = None
    for item in items:
        piece = item if isinstance(item, Text) else Text(item)
        if not piece.plain:
            continue
        if current is None:
            current = piece.copy()
        elif len(current) + len(sep) + len(piece) <= width:
            current.append(sep, "dim")
            current.append_text(piece)
        else:
            lines.append(current)
            current = piece.copy()
    if current is not None:
        lines.append(current)
    for line in lines:
        line.no_wrap = True
        line.overflow = "ellipsis"
    return lines


def one_line(text: Text) -> Text:
    """A line that is cut with an ellipsis rather than wrapped: panels keep their shape."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text
