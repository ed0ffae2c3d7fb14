"""A bordered panel that draws one immutable snapshot.

Panels keep the last :class:`EngineSnapshot` and :class:`History` they were shown and
build their text in ``render()`` at the width they have now; showing the same snapshot
again (nothing changed since the last poll) does not repaint.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
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

    def show(self, snapshot: EngineSnapshot | None, history: History) -> None:
        if _same(snapshot, self.snapshot) and history is self.history:
            return
        self.snapshot = snapshot
        self.history = history
        self.refresh()

    @property
    def inner_width(self) -> int:
        return max(10, self.content_size.width)

    def render(self) -> RenderableType:
        if self.snapshot is None:
            return Text("waiting for the engine…", style="dim")
        return self.draw(self.snapshot, self.inner_width)

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        raise NotImplementedError


def _same(a: EngineSnapshot | None, b: EngineSnapshot | None) -> bool:
    """The same engine state: polls decode a new object each time, ``seq`` tells them apart."""
    if a is None or b is None:
        return a is b
    return a.seq == b.seq and a.engine.pid == b.engine.pid
