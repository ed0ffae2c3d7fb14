"""Eviction log: every eviction the engine saw, newest first, scrollable when focused.

What ``grep Evicted training.log | tail -20`` showed in seed 000, with the figures the
cache records: time, files, bytes freed, size before and after, and the reason.

Drawn as text at the panel's size (not a DataTable): in a busy run the log changes every
second, and rebuilding a table of rows each time cost the dashboard more CPU than
everything else on screen together.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.binding import Binding

from cachewatch.engine.daemon.snapshot import EngineSnapshot, EvictionView

from .. import format as fmt
from .panel import Panel

__all__ = ["EvictionLog"]


class EvictionLog(Panel):
    TITLE = "Evictions"
    BINDINGS = [
        Binding("up", "scroll_rows(-1)", show=False),
        Binding("down", "scroll_rows(1)", show=False),
        Binding("pageup", "scroll_rows(-10)", show=False),
        Binding("pagedown", "scroll_rows(10)", show=False),
        Binding("home", "scroll_home", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.offset_rows = 0

    @property
    def rows(self) -> tuple[EvictionView, ...]:
        return self.snapshot.evictions if self.snapshot is not None else ()

    def action_scroll_rows(self, delta: int) -> None:
        self.offset_rows = max(0, min(len(self.rows) - 1, self.offset_rows + delta))
        self._set_subtitle(self.rows)
        self.redraw()

    def action_scroll_home(self) -> None:
        self.offset_rows = 0
        self._set_subtitle(self.rows)
        self.redraw()

    def show(self, snapshot: EngineSnapshot | None, history) -> None:  # type: ignore[no-untyped-def]
        # The subtitle is set here, not in draw(): changing it while rendering would ask for
        # a second frame every second.
        self._set_subtitle(snapshot.evictions if snapshot is not None else ())
        super().show(snapshot, history)

    def _set_subtitle(self, rows: tuple[EvictionView, ...]) -> None:
        self.border_subtitle = (f"{self.offset_rows + 1}-{min(len(rows), self.offset_rows + self._room())} of {len(rows)}"
                                if rows else "")

    def on_resize(self) -> None:
        self._set_subtitle(self.rows)
        self.redraw()  # more or fewer rows fit

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        rows = snap.evictions
        if not rows:
            return Text("none yet", style="dim")
        many = len({e.cache for e in rows}) > 1
        # Plain padded text, not a rich Table: a Table is measured and rendered again for
        # every line Textual asks for, which made this the most expensive panel on screen.
        shown = rows[self.offset_rows:self.offset_rows + self._room()]
        cells = [
            (fmt.clock(e.time), str(e.files), fmt.size(e.bytes), f"{fmt.size(e.size_before)} → {fmt.size(e.size_after)}",
             e.reason + (" (dry run)" if e.dry_run else "") + (f" · {fmt.shorten_path(e.cache, 20)}" if many else ""),
             e.reason == "manual")
            for e in shown
        ]
        w_files = max([5] + [len(c[1]) for c in cells])
        w_freed = max([8] + [len(c[2]) for c in cells])
        w_span = max([14] + [len(c[3]) for c in cells])
        lines = [fmt.one_line(Text(f"{'time':<8} {'files':>{w_files}} {'freed':>{w_freed}} {'before → after':<{w_span}} reason",
                                   style="bold dim"))]
        for when, files, freed, span, reason, manual in cells:
            line = Text(f"{when:<8} {files:>{w_files}} {freed:>{w_freed}} {span:<{w_span}} ")
            line.append(reason, style="yellow" if manual else "")
            lines.append(fmt.one_line(line))
        return Group(*lines)

    def _room(self) -> int:
        return max(1, self.content_size.height - 1)  # the header takes a line
