"""``e``: evict the cache down to its target, or to a size typed here.

The dialog is the question: Cancel has the focus, so Enter right away changes nothing.
``y`` evicts to the target (or to the typed size); Tab reaches the size field, where
Enter evicts to that size. A size that cannot be parsed, or one above the current size,
is refused in place with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from cachewatch.engine.daemon.snapshot import CacheView
from cachewatch.engine.sizes import SizeError, parse_size

from .. import format as fmt
from .form import FormDialog

__all__ = ["EvictDialog", "EvictRequest"]


@dataclass(frozen=True)
class EvictRequest:
    to: str | None  # None: the cache's target; else a size as typed ("80MB")

    def args(self) -> dict[str, str]:
        return {} if self.to is None else {"to": self.to}


class EvictDialog(FormDialog[EvictRequest]):
    SUBMIT_BUTTON = "evict"
    BINDINGS = [
        Binding("y", "submit", "Evict", show=False),
        Binding("n", "cancel", "Cancel", show=False),
        Binding("q", "cancel", "Cancel", show=False),
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, view: CacheView) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        s = self.view.stats
        assert s is not None
        with Vertical(id="dialog", classes="dialog evict"):
            yield Static("Evict the cache?", classes="dialog-title")
            yield Static(
                f"{self.view.root}\n"
                f"now {fmt.size(s.used_bytes)} in {s.entries} entries; target {fmt.size(s.target_bytes)}, "
                f"max {fmt.size(s.max_bytes)}.\n"
                "Least recently used entries go first; entries being read are kept.",
                classes="dialog-body",
            )
            yield Input(placeholder=f"to the target, {fmt.size(s.target_bytes)}; or type a size (80MB)", id="size", compact=True)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (n)", id="cancel", variant="primary", compact=True)
                yield Button("Evict (y)", id="evict", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def _request(self) -> EvictRequest | None:
        raw = self.query_one("#size", Input).value.strip()
        if not raw:
            return EvictRequest(None)
        try:
            wanted = parse_size(raw, what="size")
        except SizeError as exc:
            self._error(str(exc))
            return None
        s = self.view.stats
        if s is not None and wanted >= s.used_bytes:
            self._error(
                f"{raw} is not below the current size ({fmt.size(s.used_bytes)}); nothing would be evicted")
            return None
        return EvictRequest(raw)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()
