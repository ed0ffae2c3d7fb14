"""Job events on a terminal: one progress line redrawn in place, warnings on their own lines.

When the stream is not a terminal (a log file, CI), progress is written as plain lines
at most every ``plain_interval_s`` and at each phase change, so logs stay readable.
"""

from __future__ import annotations

import threading
from typing import IO

from ..console import LinePrinter
from ..sizes import format_duration, format_size
from .base import JobEvent, JobFinished, JobMessage, JobProgress

__all__ = ["ProgressPrinter", "progress_line"]


def progress_line(p: JobProgress) -> str:
    parts = [p.kind, p.phase]
    if p.total is not None:
        parts.append(f"{p.done}/{p.total} {p.unit}")
    elif p.done:
        parts.append(f"{p.done} {p.unit}")
    if p.bytes_total:
        parts.append(f"{format_size(p.bytes_done)} of {format_size(p.bytes_total)}")
        if p.rate_per_s:
            parts.append(f"{format_size(p.rate_per_s)}/s")
    elif p.rate_per_s and p.unit != "bytes":
        parts.append(f"{p.rate_per_s:.1f} {p.unit}/s")
    frac = p.fraction
    if frac is not None:
        parts.append(f"{100 * frac:.0f}%")
    if p.eta_s is not None:
        parts.append(f"ETA {format_duration(p.eta_s)}")
    if p.message:
        parts.append(p.message)
    return "  ".join(parts)


class ProgressPrinter(LinePrinter):
    """A callable for ``on_event``; thread-safe (jobs report from worker threads)."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False, plain_interval_s: float = 5.0) -> None:
        super().__init__(stream, quiet=quiet, plain_interval_s=plain_interval_s)
        self._lock = threading.Lock()

    def __call__(self, event: JobEvent) -> None:
        with self._lock:
            if isinstance(event, JobProgress):
                if self.quiet:
                    return
                self.draw(progress_line(event), event.phase)
            elif isinstance(event, JobMessage):
                if self.quiet and event.level == "info":
                    return
                self._clear()
                prefix = "" if event.level == "info" else f"{event.level}: "
                self.stream.write(f"cachewatch: {prefix}{event.text}\n")
                self.stream.flush()
            elif isinstance(event, JobFinished):
                self._clear()
                self.stream.flush()
