"""Eviction log: every eviction the engine saw, newest first, scrollable when focused.

What ``grep Evicted training.log | tail -20`` showed in seed 000, with the figures the
cache records: time, files, bytes freed, size before and after, and the reason.

Drawn as text at the panel's size (not a DataTable): in a busy run the log changes every
second, and rebuilding a table of rows each time cost the dashboard more CPU than
everything else on screen together.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
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
        self.refresh()

    def action_scroll_home(self) -> None:
        self.offset_rows = 0
        self.refresh()

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        rows = snap.evictions
        self.border_subtitle = (f"{self.offset_rows + 1}-{min(len(rows), self.offset_rows + self._room())} of {len(rows)}"
                                if rows else "")
        if not rows:
            return Text("none yet", style="dim")
        many = len({e.cache for e in rows}) > 1
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, expand=False,
                      header_style="bold dim")
        table.add_column("time", no_wrap=True, min_width=8)
        table.add_column("files", justify="right", no_wrap=True, min_width=5)
        table.add_column("freed", justify="right", no_wrap=True, min_width=8)
        table.add_column("before → after", no_wrap=True, overflow="ellipsis")
        table.add_column("reason", no_wrap=True, overflow="ellipsis")
        for e in rows[self.offset_rows:self.offset_rows + self._room()]:
            reason = e.reason + (" (dry run)" if e.dry_run else "")
            if many:
                reason = f"{reason} · {fmt.shorten_path(e.cache, 20)}"
            table.add_row(fmt.clock(e.time), str(e.files), fmt.size(e.bytes),
                          f"{fmt.size(e.size_before)} → {fmt.size(e.size_after)}",
                          Text(reason, style="yellow" if e.reason == "manual" else ""))
        return table

    def _room(self) -> int:
        return max(1, self.content_size.height - 1)  # the header takes a line
