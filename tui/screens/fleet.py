"""The fleet screen: every engine publishing to the fleet's Redis, one row each, refreshed each second.

``cachewatch fleet`` in a terminal runs :class:`FleetApp`; ``F`` on an engine's dashboard
pushes the same :class:`FleetScreen`. Enter on a row opens that engine's full dashboard fed
from Redis (:class:`~cachewatch.tui.fleet_source.RedisSource`); leaving it (``q``) comes
back here. Keys 1-8 sort by a column (again: reversed). The table is read by a thread worker:
one pipelined Redis read per refresh; the UI thread only renders the values it is handed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Static

from cachewatch.engine.cli.fleet_cmd import format_row, format_shared
from cachewatch.engine.config import FleetConfig
from cachewatch.engine.fleet.reader import FleetReader, FleetRow, FleetView

__all__ = ["FleetScreen", "FleetApp", "open_fleet", "COLUMNS"]

COLUMNS = ("Host", "Engine", "State", "Progress", "ETA", "GPU", "Cache", "Alerts")


def _sort_key(col: int) -> Callable[[FleetRow], Any]:
    def key(row: FleetRow) -> Any:
        s = row.summary
        lost = 1 if row.lost else 0
        if col == 0:
            return (row.host, row.name)
        if col == 1:
            return (row.name, row.host)
        if col == 2:
            return (lost, s.training_state or "" if s else "")
        if col == 3:
            return (lost, -1.0 if s is None or s.fraction_done is None else s.fraction_done)
        if col == 4:
            return (lost, float("inf") if s is None or s.eta_s is None else s.eta_s)
        if col == 5:
            return (lost, -1.0 if s is None or s.gpu_utilization_percent is None else s.gpu_utilization_percent)
        if col == 6:
            return (lost, -1.0 if s is None or s.cache_used_fraction is None else s.cache_used_fraction)
        return (lost, 0 if s is None else len(s.alerts))

    return key


def _style(row: FleetRow) -> str:
    if row.lost:
        return "bold red"
    return "yellow" if row.summary is not None and row.summary.alerts else ""


class FleetRead(Message):
    def __init__(self, view: FleetView) -> None:
        super().__init__()
        self.view = view


class FleetScreen(Screen[str | None]):
    """Dismissed with the chosen engine id (Enter), or None (Esc / q)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("escape,q", "leave", "Back", show=True),
        *[Binding(str(i + 1), f"sort({i})", f"Sort {c}", show=False) for i, c in enumerate(COLUMNS)],
    ]
    DEFAULT_CSS = """
    FleetScreen #fleet-status { height: 1; padding: 0 1; }
    FleetScreen #fleet-status.error { background: $error; color: $text; }
    FleetScreen DataTable { height: 1fr; }
    FleetScreen #fleet-shared { height: auto; max-height: 8; padding: 0 1; display: none; }
    FleetScreen #fleet-shared.present { display: block; }
    """

    def __init__(self, cfg: FleetConfig, *, refresh_s: float = 1.0, leave_label: str = "Back") -> None:
        super().__init__()
        self.cfg = cfg
        self.refresh_s = refresh_s
        self.reader = FleetReader(cfg)
        self.view: FleetView | None = None
        self.sort_col = 0
        self.sort_reverse = False
        self.ids: list[str] = []
        self._cells: dict[str, tuple[tuple[str, ...], str]] = {}
        self._widths: list[int] = []  # each column's width, set by us from its longest text
        self._timer: Timer | None = None
        self._leaving = False

    def compose(self) -> ComposeResult:
        yield Static(f"fleet {self.reader.url}: reading...", id="fleet-status")
        table: DataTable[Any] = DataTable(id="fleet-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="fleet-shared")  # which nodes write to which shared (Redis-indexed) cache
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._set_columns([len(f"{c} [{i + 1}]") for i, c in enumerate(COLUMNS)])
        self.query_one(DataTable).focus()

    def _set_columns(self, widths: list[int]) -> None:
        # Widths are ours, not DataTable's auto-sizing: an engine joining with a longer host
        # name once stayed cut ("home-hos") after rows were cleared and added again.
        table = self.query_one(DataTable)
        table.clear(columns=True)
        for i, (c, w) in enumerate(zip(COLUMNS, widths)):
            table.add_column(f"{c} [{i + 1}]", key=str(i), width=w)
        self._widths = widths
        self.ids, self._cells = [], {}
        self._read()

    @work(thread=True, group="fleet-read", exit_on_error=False)
    def _read(self) -> None:
        # The first read also fetches every summary, so no engine shows as "joining" at start.
        self.post_message(FleetRead(self.reader.read(complete=self.view is None)))

    def on_fleet_read(self, message: FleetRead) -> None:
        if self._leaving or not self.is_attached:
            return
        self.view = message.view
        self._render_view()
        self._timer = self.set_timer(self.refresh_s, self._read)

    def _render_view(self) -> None:
        view = self.view
        if view is None:
            return
        status = self.query_one("#fleet-status", Static)
        table = self.query_one(DataTable)
        keep = self.ids[table.cursor_row] if self.ids and 0 <= table.cursor_row < len(self.ids) else None
        if view.error is not None:
            table.clear()
            # Nothing from before is shown: an unreachable Redis means we do not know.
            status.update(Text(f"Redis unreachable: {view.error.split(': ', 1)[-1]}", style="bold"))
            status.add_class("error")
            self.ids, self._cells = [], {}
            return
        status.remove_class("error")
        shared = format_shared(view)[1:]  # (without the blank line the text view puts before it)
        box = self.query_one("#fleet-shared", Static)
        box.update(Text("\n".join(shared)))
        box.set_class(bool(shared), "present")
        rows = sorted(view.rows, key=_sort_key(self.sort_col), reverse=self.sort_reverse)
        lost = sum(r.lost for r in rows)
        status.update(Text.assemble(("fleet ", "bold"), f"{view.url} · {len(rows)} engines",
                                    (f" · {lost} lost" if lost else "", "bold red"),
                                    f" · {time.strftime('%H:%M:%S', time.localtime(view.time))}",
                                    (f" · sorted by {COLUMNS[self.sort_col]}{' (reversed)' if self.sort_reverse else ''}", "dim")))
        ids = [r.id for r in rows]
        cells = {r.id: (format_row(r, view.time), _style(r)) for r in rows}
        widths = [max([self._widths[i]] + [len(c[0][i]) for c in cells.values()]) for i in range(len(COLUMNS))]
        if widths != self._widths:
            self._set_columns(widths)  # a longer text: every row is drawn again below
        if ids == self.ids and table.row_count == len(ids):
            # Same engines, same order: only the cells that changed are redrawn (most do not, each second).
            for eid, (row_cells, style) in cells.items():
                before = self._cells.get(eid)
                for i, text in enumerate(row_cells):
                    if before is None or before[0][i] != text or before[1] != style:
                        table.update_cell(eid, str(i), Text(text, style=style), update_width=True)
        else:
            table.clear()
            for eid in ids:
                row_cells, style = cells[eid]
                table.add_row(*(Text(c, style=style) for c in row_cells), key=eid)
            if keep in ids:
                table.move_cursor(row=ids.index(keep))
        self.ids, self._cells = ids, cells

    def action_sort(self, col: int) -> None:
        if self.sort_col == col:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_col, self.sort_reverse = col, False
        self._render_view()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort(event.column_index)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if not self.ids or not 0 <= table.cursor_row < len(self.ids):
            self.notify("no engine to open", severity="warning")
            return
        self._leave(self.ids[table.cursor_row])

    def action_leave(self) -> None:
        self._leave(None)

    def _leave(self, result: str | None) -> None:
        self._leaving = True
        if self._timer is not None:
            self._timer.stop()
        self.reader.close()
        self.dismiss(result)


class FleetApp(App[str | None]):
    """``cachewatch fleet``: the fleet screen alone; returns the engine to open, or None to quit."""

    TITLE = "cachewatch fleet"

    def __init__(self, cfg: FleetConfig, *, refresh_s: float = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.refresh_s = refresh_s

    def on_mount(self) -> None:
        self.push_screen(FleetScreen(self.cfg, refresh_s=self.refresh_s), self.exit)


def open_fleet(cfg: FleetConfig, *, readonly: bool = False, refresh_s: float = 1.0,
               keymap: dict[str, str] | None = None) -> int:
    """The fleet screen; Enter opens an engine's dashboard through Redis, q there comes back."""
    from ..app import CachewatchApp
    from ..fleet_source import RedisSource

    while True:
        chosen = FleetApp(cfg, refresh_s=refresh_s).run()
        if chosen is None:
            return 0
        source = RedisSource(cfg, chosen)
        app = CachewatchApp(source, refresh_s=refresh_s, readonly=readonly, keymap=keymap, engine_name=chosen,
                            intro=f"{chosen} through Redis; q goes back to the fleet")
        try:
            app.run()
        finally:
            source.close()
