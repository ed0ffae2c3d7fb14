"""Eviction log: every eviction the engine saw, newest first, scrollable when focused.

What ``grep Evicted training.log | tail -20`` showed in seed 000, with the figures the
cache records: time, files, bytes freed, size before and after, and the reason.

Repeated evictions are coalesced, as a log viewer folds repeated messages: a cache that
evicts in small batches many times a second (the demo: 9 files every ~80 ms) would push a
manual eviction out of view within a second, and the engine's snapshot holds only its
latest 50 evictions. So the panel keeps its own history: consecutive automatic evictions
of one cache, for one reason, at most :data:`GAP_S` apart, fold into one row for up to
:data:`RUN_S` ("target ×137", files and bytes summed, size from the first to the last). A
manual eviction is never folded and stays in the panel after the engine has dropped it.

Drawn as text at the panel's size (not a DataTable): in a busy run the log changes every
second, and rebuilding a table of rows each time cost the dashboard more CPU than
everything else on screen together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.console import Group, RenderableType
from rich.text import Text
from textual.binding import Binding

from cachewatch.engine.daemon.snapshot import EngineSnapshot, EvictionView

from .. import format as fmt
from .panel import Panel

__all__ = ["EvictionLog", "EvictionRun", "GAP_S", "RUN_S"]

GAP_S = 10.0  # evictions closer than this belong to one run...
RUN_S = 60.0  # ...for at most this long, so a sustained run still shows one row a minute
MAX_ROWS = 200


@dataclass(frozen=True)
class EvictionRun:
    """One eviction, or several consecutive ones folded together (``count`` > 1)."""

    first_time: float
    time: float  # the newest
    cache: str
    reason: str
    files: int
    bytes: int
    size_before: int  # before the first
    size_after: int  # after the newest
    dry_run: bool
    count: int = 1

    @classmethod
    def of(cls, e: EvictionView) -> "EvictionRun":
        return cls(e.time, e.time, e.cache, e.reason, e.files, e.bytes, e.size_before, e.size_after, e.dry_run)

    @property
    def manual(self) -> bool:
        return self.reason == "manual"

    def takes(self, e: EvictionView) -> bool:
        return (not self.manual and e.reason == self.reason and e.cache == self.cache and e.dry_run == self.dry_run
                and 0 <= e.time - self.time <= GAP_S and e.time - self.first_time <= RUN_S)

    def plus(self, e: EvictionView) -> "EvictionRun":
        return replace(self, time=e.time, files=self.files + e.files, bytes=self.bytes + e.bytes,
                       size_after=e.size_after, count=self.count + 1)


def _identity(e: EvictionView) -> tuple[object, ...]:
    return (e.time, e.cache, e.reason, e.files, e.bytes, e.size_before, e.size_after)


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
        self.rows: tuple[EvictionRun, ...] = ()  # newest first
        self._seen: set[tuple[object, ...]] = set()  # the engine's evictions already in `rows`
        self._engine_pid: int | None = None

    def action_scroll_rows(self, delta: int) -> None:
        self.offset_rows = max(0, min(len(self.rows) - 1, self.offset_rows + delta))
        self._set_subtitle()
        self.redraw()

    def action_scroll_home(self) -> None:
        self.offset_rows = 0
        self._set_subtitle()
        self.redraw()

    def show(self, snapshot: EngineSnapshot | None, history) -> None:  # type: ignore[no-untyped-def]
        if snapshot is not None:
            self._take(snapshot)
        # The subtitle is set here, not in draw(): changing it while rendering would ask for
        # a second frame every second.
        self._set_subtitle()
        super().show(snapshot, history)

    def _take(self, snap: EngineSnapshot) -> None:
        """Fold the snapshot's evictions not seen yet into ``rows``."""
        if snap.engine.pid != self._engine_pid:  # another engine: its own history
            self._engine_pid, self.rows, self._seen = snap.engine.pid, (), set()
        fresh = [e for e in reversed(snap.evictions) if _identity(e) not in self._seen]  # oldest first
        if not fresh:
            return
        rows = list(self.rows)
        for e in fresh:
            if rows and rows[0].takes(e):
                rows[0] = rows[0].plus(e)
            else:
                rows.insert(0, EvictionRun.of(e))
        self.rows = tuple(rows[:MAX_ROWS])
        # Only what the engine still sends can come again: forget the rest.
        self._seen = {_identity(e) for e in snap.evictions}

    def _set_subtitle(self) -> None:
        rows = self.rows
        self.border_subtitle = (f"{self.offset_rows + 1}-{min(len(rows), self.offset_rows + self._room())} of {len(rows)}"
                                if rows else "")

    def on_resize(self) -> None:
        self._set_subtitle()
        self.redraw()  # more or fewer rows fit

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        rows = self.rows
        if not rows:
            return Text("none yet", style="dim")
        many = len({e.cache for e in rows}) > 1
        # Plain padded text, not a rich Table: a Table is measured and rendered again for
        # every line Textual asks for, which made this the most expensive panel on screen.
        shown = rows[self.offset_rows:self.offset_rows + self._room()]
        cells = [
            (fmt.clock(e.time), str(e.files), fmt.size(e.bytes), f"{fmt.size(e.size_before)} → {fmt.size(e.size_after)}",
             e.reason + (f" ×{e.count} since {fmt.clock(e.first_time)}" if e.count > 1 else "")
             + (" (dry run)" if e.dry_run else "") + (f" · {fmt.shorten_path(e.cache, 20)}" if many else ""),
             e.manual)
            for e in shown
        ]
        w_files = max([5] + [len(c[1]) for c in cells])
        w_freed = max([8] + [len(c[2]) for c in cells])
        w_span = max([14] + [len(c[3]) for c in cells])
        # The reason says which row is a manual eviction: in a narrow panel it keeps its room
        # and the sizes before and after give way.
        with_span = width >= 8 + w_files + w_freed + w_span + 4 + 16
        span_head = f" {'before → after':<{w_span}}" if with_span else ""
        lines = [fmt.one_line(Text(f"{'time':<8} {'files':>{w_files}} {'freed':>{w_freed}}{span_head} reason",
                                   style="bold dim"))]
        for when, files, freed, span, reason, manual in cells:
            line = Text(f"{when:<8} {files:>{w_files}} {freed:>{w_freed}}" + (f" {span:<{w_span}}" if with_span else "") + " ")
            line.append(reason, style="yellow" if manual else "")
            lines.append(fmt.one_line(line))
        return Group(*lines)

    def _room(self) -> int:
        return max(1, self.content_size.height - 1)  # the header takes a line
