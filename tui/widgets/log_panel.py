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
        # Follow the tail unless the user is reading back: focused (`l`) and scrolled up.
        # (Log's own auto-scroll only follows when the view is already at the end, and the
        # first batch arrives before layout, so it would never start following.)
        follow = not self.has_focus or self.is_vertical_scroll_end
        if reset:
            self.clear()
        if lines:
            self.write_lines(lines, scroll_end=False)
            if follow:
                self.scroll_end(animate=False, immediate=False, x_axis=False)
        self.border_subtitle = pending[-60:] if pending else ""
