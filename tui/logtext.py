"""Training output as display lines: tqdm's carriage returns and terminal colours handled.

Output arrives in arbitrary chunks. :class:`LogLines` returns the lines each chunk
completes and keeps the unfinished one for the next chunk. A line that a progress bar
redraws with ``\\r`` shows its last state, as the terminal would have.
"""

from __future__ import annotations

import re

__all__ = ["LogLines", "strip_ansi"]

# CSI sequences (colours, cursor moves) and OSC titles: the log widget shows plain text.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_MAX_LINE = 4000  # a line without newlines (a binary blob printed by mistake) is cut here


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _last_redraw(line: str) -> str:
    # "\r" returns to column 0; what follows overwrites the line. Bars end with the newest state.
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


class LogLines:
    def __init__(self) -> None:
        self._pending = ""

    def reset(self) -> None:
        self._pending = ""

    @property
    def pending(self) -> str:
        """The line being written now (a progress bar in flight), as it would show."""
        return _last_redraw(strip_ansi(self._pending))

    def feed(self, text: str) -> list[str]:
        if not text:
            return []
        data = self._pending + text
        pieces = data.split("\n")
        self._pending = pieces.pop()
        if len(self._pending) > _MAX_LINE:
            pieces.append(self._pending[:_MAX_LINE])
            self._pending = ""
        return [_last_redraw(strip_ansi(p))[:_MAX_LINE].rstrip() for p in pieces]
