"""``e``: evict the cache down to its target, or to a size typed here.

The size field has the focus, so a size can be typed at once. ``y`` (or Enter) evicts to
what was typed; ``y`` with the field empty evicts to the target; ``n``, ``q`` and Escape
cancel. No size is written with y, n or q, so those keys answer the dialog even while
the field has the focus. Enter on an empty field asks instead of evicting: the first
key pressed in the dialog never deletes anything by accident. A size that cannot be
parsed, or one not below the current size, is refused in place with the reason. The
example in the field is a size of this cache (about half of what it holds now), not a
fixed one that may be above it.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from cachewatch.engine.daemon.snapshot import CacheView
from cachewatch.engine.sizes import SizeError, parse_size

from .. import format as fmt
from .form import FormDialog

__all__ = ["EvictDialog", "EvictRequest"]


_ANSWERS = frozenset("ynq")  # no size is written with these letters


class SizeInput(Input):
    """The size field: y, n and q answer the dialog instead of being typed.

    Handled here, in the field's own turn, not by a priority binding of the dialog: keys
    typed fast ("3MBy" from a script, a paste) are queued to the field, and a priority
    binding ran y before the field had taken "MB", evicting to "3".
    """

    async def on_key(self, event: events.Key) -> None:
        if event.character in _ANSWERS:
            event.prevent_default()  # not typed into the field
            event.stop()
            await self.run_action("screen.submit" if event.character == "y" else "screen.cancel")


@dataclass(frozen=True)
class EvictRequest:
    to: str | None  # None: the cache's target; else a size as typed ("80MB")

    def args(self) -> dict[str, str]:
        return {} if self.to is None else {"to": self.to}


class EvictDialog(FormDialog[EvictRequest]):
    SUBMIT_BUTTON = "evict"
    # With the size field focused, SizeInput answers y, n and q itself (see there).
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
            yield SizeInput(placeholder=f"empty: to the target, {fmt.size(s.target_bytes)}; or a size ({example_size(s.used_bytes)})",
                        id="size", compact=True)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (n)", id="cancel", variant="primary", compact=True)
                yield Button("Evict (y)", id="evict", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#size", Input).focus()

    def on_key(self, event: events.Key) -> None:
        # A size typed before the field has the focus (typed right after `e`, or with the
        # focus on a button) still goes into the field, instead of being dropped and leaving
        # y to evict to the target.
        field = self.query_one("#size", SizeInput)
        char = event.character
        if not field.has_focus and char and char.isprintable() and char not in _ANSWERS:
            event.stop()
            field.focus()
            field.insert_text_at_cursor(char)

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
        if not event.value.strip():
            s = self.view.stats
            target = fmt.size(s.target_bytes) if s is not None else "the target"
            self._error(f"type a size, or y to evict to the target ({target}); n cancels")
            return
        self.action_submit()


def example_size(used_bytes: int) -> str:
    """A size to type for this cache: about half of what it holds now, two figures, as people
    write it ("48GB", "3.6MB"). Never the same as used, so it is always a valid answer."""
    half = max(1, used_bytes // 2)
    for unit, factor in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if half >= factor:
            value = half / factor
            return f"{value:.2g}{unit}" if value < 10 else f"{int(value)}{unit}"
    return f"{half}B"
