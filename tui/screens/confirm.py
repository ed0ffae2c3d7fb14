"""The one question destructive actions ask: ``y`` / ``n``, with the safe answer focused.

Enter on the focused button answers; ``n``, ``q`` and Escape say no, ``y`` says yes; so
nothing depends on Escape alone (tmux delays it).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

__all__ = ["ConfirmationModal"]


class ConfirmationModal(ModalScreen[bool]):
    # Focused by Textual when the screen shows, not queried in on_mount: a screen pushed
    # while the app shuts down may mount without its children.
    AUTO_FOCUS = "#no"

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n", "answer(False)", "No", show=False),
        Binding("q", "answer(False)", "No", show=False),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, title: str, body: str, *, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = title
        self.body = body
        self.yes_label = yes
        self.no_label = no

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog confirm"):
            yield Static(self.question, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.no_label} (n)", id="no", variant="primary", compact=True)
                yield Button(f"{self.yes_label} (y)", id="yes", variant="error", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
