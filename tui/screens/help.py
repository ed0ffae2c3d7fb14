"""``?``: every key, generated from the same table as the bindings and the palette."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen"]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("q", "close", "Close", show=False),
        Binding("escape", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
        Binding("enter", "close", "Close", show=False),
    ]

    def __init__(self, rows: list[tuple[str, str, bool]], *, readonly: bool) -> None:
        super().__init__()
        self.key_rows = rows
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for keys, text, asks in self.key_rows:
            # Text, not markup: a help line may name a config key such as "[fleet] url".
            table.add_row(Text(keys), Text(text + (" (asks first)" if asks else "")))
        table.add_row("Tab", "move between panels")
        table.add_row("^p", "command palette: every action above, by name")
        foot = "Read-only: actions that change the training or the cache are not offered." if self.readonly else \
            "Quitting detaches: the engine and the training keep running. Esc, q or ? closes this."
        with Vertical(id="dialog", classes="dialog help"):
            yield Static(Text("Keys", style="bold"), classes="dialog-title")
            with VerticalScroll(classes="result-body"):
                yield Static(table)
            yield Static(Text(foot, style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
