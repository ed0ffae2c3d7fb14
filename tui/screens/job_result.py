"""The outcome of a verify, build or split job: the engine's summary, the verdict in colour.

A verify that found problems offers ``r``: repair (asks first, with No focused).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from cachewatch.engine.daemon.snapshot import JobView

from .. import format as fmt
from ..widgets.jobs_bar import job_outcome

__all__ = ["JobResultScreen"]


class JobResultScreen(ModalScreen[str | None]):
    """Dismissed with ``"repair"`` when the user asked for a repair, else None."""

    # Focused by Textual when the screen shows, not queried in on_mount: a screen pushed
    # while the app shuts down may mount without its children.
    AUTO_FOCUS = "#close"

    BINDINGS = [
        Binding("q", "close", "Close", show=False),
        Binding("escape", "close", "Close", show=False),
        Binding("r", "repair", "Repair", show=False),
    ]

    def __init__(self, job: JobView, *, can_repair: bool) -> None:
        super().__init__()
        self.job = job
        self.can_repair = can_repair and job.kind == "verify" and job.state == "done" and not job.result.get("ok", True)

    def compose(self) -> ComposeResult:
        job = self.job
        verdict, style = job_outcome(job)
        took = fmt.duration((job.ended or job.started) - job.started)
        with Vertical(id="dialog", classes="dialog result"):
            yield Static(Text(f"{job.kind.capitalize()} result", style="bold"), classes="dialog-title")
            yield Static(Text(verdict, style=style), id="verdict")
            body = str(job.result.get("summary") or "") or (job.error or "")
            with VerticalScroll(classes="result-body"):
                yield Static(Text(body), id="summary")
            yield Static(Text(f"{job.id} · {job.state} · took {took}", style="dim"))
            with Horizontal(classes="buttons"):
                yield Button("Close (q)", id="close", variant="primary", compact=True)
                if self.can_repair:
                    yield Button("Repair… (r)", id="repair", variant="error", compact=True)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_repair(self) -> None:
        if self.can_repair:
            self.dismiss("repair")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss("repair" if event.button.id == "repair" else None)
