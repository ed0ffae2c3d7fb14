"""An alert in full: what happened, the figures, and what to do about it (OOM remedies)."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from cachewatch.engine.daemon.snapshot import Alert

from .. import format as fmt
from ..widgets.alert_banner import SEVERITY_MARK, SEVERITY_STYLE

__all__ = ["AlertDetailsScreen"]

_FIGURE_SKIP = {"v", "t", "time", "raw", "message", "line"}


def _figure(name: str, value: object) -> str:
    if isinstance(value, (int, float)) and name.endswith("_bytes"):
        return f"{name[:-6].replace('_', ' ')}: {fmt.gib(value)}"
    return f"{name.replace('_', ' ')}: {value}"


class AlertDetailsScreen(ModalScreen[str | None]):
    """Dismissed with ``"dismiss"`` when the user dismissed the alert, else None."""

    # Focused by Textual when the screen shows, not queried in on_mount: a screen pushed
    # while the app shuts down may mount without its children.
    AUTO_FOCUS = "#close"

    BINDINGS = [
        Binding("q", "close", "Close", show=False),
        Binding("escape", "close", "Close", show=False),
        Binding("d", "dismiss_alert", "Dismiss", show=False),
    ]

    def __init__(self, alert: Alert, *, now: float, can_dismiss: bool, others: int = 0) -> None:
        super().__init__()
        self.alert = alert
        self.now = now
        self.can_dismiss = can_dismiss
        self.others = others

    def compose(self) -> ComposeResult:
        a = self.alert
        style = SEVERITY_STYLE.get(a.severity, "bold")
        head = Text(f" {SEVERITY_MARK.get(a.severity, '!')} {a.title} ", style=style)
        when = f"{a.severity} · first {fmt.clock(a.time)}"
        if a.count > 1:
            when += f" · {a.count} times, last {fmt.clock(a.last_time)}"
        parts: list[Text] = [Text(a.text)] if a.text else []
        if a.remedies:
            parts.append(Text("\nWhat to do", style="bold"))
            parts.extend(Text(f"  • {r}") for r in a.remedies)
        figures = [(k, v) for k, v in a.figures.items() if k not in _FIGURE_SKIP and v not in (None, "", [], {})]
        if figures:
            parts.append(Text("\nFigures", style="bold"))
            parts.extend(Text(f"  {_figure(k, v)}", style="dim") for k, v in figures)
        with Vertical(id="dialog", classes="dialog alert-details"):
            yield Static(head, classes="dialog-title")
            yield Static(Text(when, style="dim"))
            with VerticalScroll(classes="result-body"):
                yield Static(Group(*parts))
            if self.others:
                yield Static(Text(f"{self.others} more alert(s): dismiss this one to see the next", style="dim"))
            with Horizontal(classes="buttons"):
                yield Button("Close (q)", id="close", variant="primary", compact=True)
                if self.can_dismiss:
                    yield Button("Dismiss (d)", id="dismiss", variant="warning", compact=True)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_dismiss_alert(self) -> None:
        if self.can_dismiss:
            self.dismiss("dismiss")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss("dismiss" if event.button.id == "dismiss" else None)
