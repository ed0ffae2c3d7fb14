"""Eviction log: every eviction the engine saw, newest first, scrollable.

What ``grep Evicted training.log | tail -20`` showed in seed 000, with the figures the
cache records: time, files, bytes, reason, and the size before and after.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from cachewatch.engine.daemon.snapshot import EngineSnapshot, EvictionView

from .. import format as fmt

__all__ = ["EvictionLog"]


class EvictionLog(DataTable):
    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True, show_cursor=False)
        self.border_title = "Evictions"
        self._shown: tuple[EvictionView, ...] | None = None
        self._roots: int = 0

    def on_mount(self) -> None:
        self.add_columns("time", "files", "freed", "before → after", "reason")

    def on_focus(self) -> None:
        self.show_cursor = True

    def on_blur(self) -> None:
        self.show_cursor = False

    def show(self, snap: EngineSnapshot | None) -> None:
        if snap is None or snap.evictions == self._shown:
            return
        self._shown = snap.evictions
        roots = {e.cache for e in snap.evictions}
        many = len(roots) > 1
        self.clear()
        self.border_subtitle = f"{len(snap.evictions)} shown" if snap.evictions else ""
        if not snap.evictions:
            self.add_row(Text("none yet", style="dim"), "", "", "", "")
            return
        for e in snap.evictions:
            reason = e.reason + (" (dry run)" if e.dry_run else "")
            if many:
                reason = f"{reason} · {fmt.shorten_path(e.cache, 20)}"
            self.add_row(
                fmt.clock(e.time),
                Text(str(e.files), justify="right"),
                Text(fmt.size(e.bytes), justify="right"),
                f"{fmt.size(e.size_before)} → {fmt.size(e.size_after)}",
                reason,
            )
