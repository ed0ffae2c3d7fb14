"""A status line on a terminal (redrawn in place) or in a log (plain lines, not too often).

Shared by the job progress printer (``jobs/console.py``) and push/pull (``cli/sync_cmd.py``);
kept out of ``jobs/`` so that a command line that only syncs does not import every job.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO

__all__ = ["LinePrinter"]


class LinePrinter:
    """One status line: redrawn in place on a terminal; otherwise written as a plain line at
    each phase change, when ``final``, and at most every ``plain_interval_s`` in between."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False, plain_interval_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_interval_s = plain_interval_s
        self._drawn = False
        self._last_plain = 0.0
        self._last_phase = ""

    def draw(self, line: str, phase: str, *, final: bool = False) -> None:
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[K" + line[:width])
            self._drawn = True
        else:
            now = time.monotonic()
            if phase != self._last_phase or now - self._last_plain >= self.plain_interval_s or final:
                self._last_plain, self._last_phase = now, phase
                self.stream.write(line + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def close(self) -> None:
        self._clear()
        self.stream.flush()
