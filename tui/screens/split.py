"""``s``: split large batch files (seed 002's ``divide_conquer.py``) as an engine job.

A form: input (file or directory), output directory, items per sub-batch, and whether
to delete the originals once every output is validated. Deleting them makes the split
destructive in the engine's command table, so Start then asks once more, with No focused;
a split that keeps its originals starts at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, Static

from .form import FormDialog

__all__ = ["SplitDialog", "SplitRequest"]

DEFAULT_TRACES_PER_BATCH = 250  # divide_conquer.py's default


@dataclass(frozen=True)
class SplitRequest:
    input: str
    output: str
    traces_per_batch: int
    delete_original: bool = False

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "output": self.output, "traces_per_batch": self.traces_per_batch}
        if self.delete_original:
            out["delete_original"] = True
            out["confirmed"] = True  # the confirmation modal asked
        return out

    def describe(self) -> str:
        fate = "The originals are DELETED once their outputs are validated." if self.delete_original else \
            "The originals are kept."
        return (f"Split {self.input}\ninto {self.output},\n{self.traces_per_batch} items per sub-batch "
                f"(.part files, then validated).\n{fate}")


class SplitDialog(FormDialog[SplitRequest]):
    SUBMIT_BUTTON = "start"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("ctrl+s", "submit", "Start", show=False),
    ]

    def __init__(self, input: str = "", output: str = "", traces_per_batch: int = DEFAULT_TRACES_PER_BATCH) -> None:
        super().__init__()
        self.defaults = (input, output, traces_per_batch)

    def compose(self) -> ComposeResult:
        inp, out, n = self.defaults
        with Vertical(id="dialog", classes="dialog split"):
            yield Static("Split batch files", classes="dialog-title")
            yield Label("input: a .pkl / .pkl.gz / .npy / .npz / .pt file, or a directory of them")
            yield Input(value=inp, placeholder="/data/batches", id="input", compact=True)
            yield Label("output directory")
            yield Input(value=out, placeholder="/data/batches_split", id="output", compact=True)
            yield Label("items (traces) per sub-batch")
            yield Input(value=str(n), id="traces", type="integer", compact=True)
            yield Checkbox("delete the originals after validation", id="delete", compact=True)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", variant="primary", compact=True)
                yield Button("Start", id="start", variant="warning", compact=True)

    def on_mount(self) -> None:
        self.query_one("#input", Input).focus()

    def _request(self) -> SplitRequest | None:
        inp = self.query_one("#input", Input).value.strip()
        out = self.query_one("#output", Input).value.strip()
        raw = self.query_one("#traces", Input).value.strip()
        if not inp:
            self._error("input is empty: give a batch file or a directory of them")
            return None
        if not out:
            self._error("output is empty: give the directory for the sub-batches")
            return None
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            self._error(f"items per sub-batch = {raw!r}: give a whole number of at least 1 (e.g. 250)")
            return None
        return SplitRequest(inp, out, n, self.query_one("#delete", Checkbox).value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter moves on through the form; on the last field it starts.
        event.stop()
        if event.input.id == "traces":
            self.action_submit()
        else:
            self.focus_next()
