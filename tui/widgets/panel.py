"""A bordered panel that draws one immutable snapshot.

Panels keep the last :class:`EngineSnapshot` and :class:`History` they were shown and
build their text at the width they have now; showing the same snapshot again (nothing
changed since the last poll) does not repaint.

A new snapshot usually changes a few figures, not the whole panel. When a panel is drawn
as texts (all of them are), only the screen rows of the texts that changed are marked
dirty, so Textual rewrites those rows alone: at 160x48 this halves what the dashboard
writes to the terminal every second. Rows, not texts: a text that wraps (the "no GPU"
reason in a narrow panel) takes several rows, and every text under it moves down by as
many. When the rows move (a text wraps differently, one is added), the whole panel is
repainted.
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.text import Text
from textual.geometry import Region
from textual.widget import Widget

from cachewatch.engine.daemon.snapshot import EngineSnapshot

from ..history import History

__all__ = ["Panel"]


class Panel(Widget, can_focus=True):
    TITLE = ""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.border_title = self.TITLE
        self.snapshot: EngineSnapshot | None = None
        self.history: History = History()
        # (width, drawing, its rows) of the last show(); render() hands the drawing to Textual
        self._drawn: tuple[int, RenderableType, list[_Line] | None] | None = None
        self._drawn_for: tuple[object, ...] | None = None

    def show(self, snapshot: EngineSnapshot | None, history: History) -> None:
        if _same(snapshot, self.snapshot) and history is self.history:
            return
        self.snapshot = snapshot
        self.history = history
        width = self.inner_width
        previous = self._drawn
        self.render()
        lines = self._drawn[2] if self._drawn is not None else None
        if (lines is None or previous is None or previous[0] != width or previous[2] is None
                or [n for _, n in previous[2]] != [n for _, n in lines]):
            self.refresh()  # the rows moved: repaint all of it
            return
        regions, y = [], 0
        for (old, rows), (new, _) in zip(previous[2], lines):
            if old != new:
                regions.append(Region(0, y, width, rows))
            y += rows
        if regions:
            self.refresh(*regions)

    @property
    def inner_width(self) -> int:
        return max(10, self.content_size.width)

    def redraw(self) -> None:
        """Draw again from the same snapshot (the view changed: scrolled, resized)."""
        self._drawn = self._drawn_for = None
        self.refresh()

    def render(self) -> RenderableType:
        key = (self.snapshot, self.history, self.inner_width)
        old = self._drawn_for
        if self._drawn is not None and old is not None and old[0] is key[0] and old[1] is key[1] and old[2] == key[2]:
            return self._drawn[1]
        self._drawn_for = key
        if self.snapshot is None:
            drawing: RenderableType = Text("waiting for the engine…", style="dim")
        else:
            drawing = self.draw(self.snapshot, self.inner_width)
        self._drawn = (self.inner_width, drawing, _line_rows(drawing, self.inner_width, self.app.console))
        return drawing

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        raise NotImplementedError


_Line = tuple[tuple[str, str], int]  # ((text, styles), the rows it takes at the panel's width)


def _line_rows(renderable: RenderableType, width: int, console: Console) -> list[_Line] | None:
    """Each text of a drawing made of texts (possibly grouped), with the rows it takes, else None."""
    out: list[_Line] = []

    def walk(r: object) -> bool:
        if isinstance(r, Group):
            return all(walk(x) for x in r.renderables)
        if isinstance(r, Text) and "\n" not in r.plain:
            rows = 1 if r.no_wrap else len(r.wrap(console, width))  # a cut line keeps to one row
            out.append(((r.plain, repr(r.spans) + str(r.style)), rows))
            return True
        return False

    return out if walk(renderable) else None


def _same(a: EngineSnapshot | None, b: EngineSnapshot | None) -> bool:
    """The same engine state: polls decode a new object each time, ``seq`` tells them apart."""
    if a is None or b is None:
        return a is b
    return a.seq == b.seq and a.engine.pid == b.engine.pid
