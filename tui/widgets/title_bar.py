"""One line at the top: which engine, its state, the last update, and a connection problem if any."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from cachewatch.engine.daemon.snapshot import EngineSnapshot

from .. import format as fmt

__all__ = ["TitleBar"]


class TitleBar(Widget):
    def __init__(self, engine_name: str, *, readonly: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.engine_name = engine_name
        self.readonly = readonly
        self.snapshot: EngineSnapshot | None = None
        self.error: str | None = None
        self.status = "connecting…"

    def show(self, snap: EngineSnapshot | None, error: str | None) -> None:
        self.snapshot, self.error = snap, error
        if snap is not None:
            self.engine_name = snap.engine.name
        self.refresh()

    def render(self) -> Text:
        width = self.content_size.width
        left = Text(" cachewatch ", style="bold reverse")
        name = self.engine_name or "engine"
        left.append(f" {name}", "bold")
        snap = self.snapshot
        if snap is not None:
            left.append(f" · pid {snap.engine.pid} · up {fmt.duration(snap.time - snap.engine.started)}", "dim")
        if self.readonly:
            left.append("  read-only", "bold magenta")
        right = Text()
        if self.error:
            right.append(self.error, "bold white on red")
        elif snap is None:
            right.append(self.status, "dim")
        else:
            right.append(f"updated {fmt.clock(snap.time)}", "dim")
        room = width - len(left) - 1
        if len(right) > room:
            right.truncate(max(0, room), overflow="ellipsis")
        left.append(" " * max(1, width - len(left) - len(right)))
        left.append_text(right)
        return left
