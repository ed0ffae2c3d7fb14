"""The tail of the training's output, as it arrives (complete lines; the line in flight below)."""

from __future__ import annotations

from textual.widgets import Log

__all__ = ["TrainingLog"]

MAX_LINES = 2000


class TrainingLog(Log):
    """Follows the newest line until the reader scrolls up; scrolling back to the end (or End)
    follows again.

    Following is Textual's anchor, kept by the layout itself: "follow when the view is at the
    end before this write" lost the end for good once anything moved it without a scroll by
    the reader (a resize that shortens the panel, the 1 s animation of End overtaken by the
    next lines), and the panel stayed on old lines while the training went on.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, max_lines=MAX_LINES, auto_scroll=False)
        self.border_title = "Training output"

    def on_mount(self) -> None:
        self.anchor()

    @property
    def following(self) -> bool:
        """The view stays on the newest line as lines arrive."""
        return self.is_anchored and not self._anchor_released

    def add(self, lines: tuple[str, ...], *, reset: bool, pending: str) -> None:
        if reset:
            self.clear()
            self.anchor()  # another engine's output (or the first poll): start at its end
        if lines:
            self.write_lines(lines, scroll_end=False)
            if self.following:
                self.scroll_end(animate=False, immediate=False, x_axis=False)
        self.border_subtitle = pending[-60:] if pending else ""
