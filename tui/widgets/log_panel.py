"""The tail of the training's output, as it arrives (complete lines; the line in flight below)."""

from __future__ import annotations

from textual.widgets import Log

__all__ = ["TrainingLog"]

MAX_LINES = 2000


class TrainingLog(Log):
    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, max_lines=MAX_LINES, auto_scroll=True)
        self.border_title = "Training output"

    def add(self, lines: tuple[str, ...], *, reset: bool, pending: str) -> None:
        if reset:
            self.clear()
        if lines:
            self.write_lines(lines)
        self.border_subtitle = pending[-60:] if pending else ""
