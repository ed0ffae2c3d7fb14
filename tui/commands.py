"""The dashboard's actions, defined once.

Each :class:`DashboardAction` is the single source of its key binding (with an ``id``
that ``[dashboard] keys`` remaps), its footer label, its help line, its command-palette
entry and the engine command it sends. The app builds ``BINDINGS`` from :data:`ACTIONS`,
the help screen lists :data:`ACTIONS`, the palette offers :data:`ACTIONS`; nothing else
declares a key.

Whether an action asks before it runs comes from the engine's own command table
(``CommandSpec.is_destructive(args)`` in ``engine/daemon/protocol.py``, asked by
``CachewatchApp.send_asking`` for each call), so the engine and the dashboard cannot
disagree about what is destructive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from textual.binding import Binding

from cachewatch.engine.daemon.protocol import COMMANDS
from cachewatch.engine.errors import ConfigError

__all__ = ["DashboardAction", "ACTIONS", "ACTIONS_BY_ID", "bindings", "check_keymap", "effective_keys", "available"]


@dataclass(frozen=True)
class DashboardAction:
    id: str  # the Binding id: ``[dashboard] keys`` maps it to another key
    key: str  # default key, Textual's name for it
    label: str  # footer text, short
    help: str  # help screen and command palette
    engine_command: str | None = None  # the protocol command it sends (``COMMANDS`` key)
    changes_state: bool = False  # changes the training or the cache: absent with --readonly
    footer: bool = True
    key_display: str | None = None

    @property
    def destructive(self) -> bool:
        """May ask first (the help column); each call asks when ``is_destructive(args)`` says so."""
        spec = COMMANDS.get(self.engine_command or "")
        return bool(spec and spec.destructive)

    @property
    def engine_help(self) -> str:
        spec = COMMANDS.get(self.engine_command or "")
        return spec.help if spec else ""

    @property
    def action_string(self) -> str:
        return f"run_action('{self.id}')"


ACTIONS: tuple[DashboardAction, ...] = (
    DashboardAction("evict", "e", "Evict", "evict the cache down to its target, or to a size you type", "evict",
                    changes_state=True),
    DashboardAction("verify", "v", "Verify", "verify the cache (index, files, checksums, source); shows the result",
                    "verify"),
    DashboardAction("split", "s", "Split", "split large batch files into smaller ones (input, output, items per batch)",
                    "split", changes_state=True),
    DashboardAction("pause", "p", "Pause", "pause the training, or resume it when paused", "pause", changes_state=True),
    DashboardAction("restart", "r", "Restart", "stop the training gracefully and start it again (or start it once ended)",
                    "restart", changes_state=True),
    DashboardAction("stop", "S", "Stop", "stop the training gracefully; the engine and the dashboard stay", "stop",
                    changes_state=True, key_display="S"),
    DashboardAction("push", "P", "Push", "push the cache to [cache] remote (only what is missing, then a manifest); "
                    "shows the result", "push", changes_state=True, footer=False, key_display="P"),
    DashboardAction("pull", "U", "Pull", "pull what the cache lacks from [cache] remote, every object verified; "
                    "shows the result", "pull", changes_state=True, footer=False, key_display="U"),
    DashboardAction("cancel_job", "c", "Cancel job", "cancel the running verify, build, split, push or pull job", "cancel_job",
                    changes_state=True, footer=False),
    DashboardAction("alert", "a", "Alert", "show the newest alert in full: figures and remedies", footer=False),
    DashboardAction("dismiss", "d", "Dismiss", "dismiss the newest alert (it stays in the alert list, greyed)",
                    "dismiss_alert", changes_state=True, footer=False),
    DashboardAction("log", "l", "Log", "focus the training output (arrows and PgUp/PgDn scroll it)"),
    DashboardAction("evictions", "h", "Evictions", "focus the eviction history (arrows scroll it)", footer=False),
    DashboardAction("zoom", "z", "Zoom", "show the focused panel alone, or go back to all panels", footer=False),
    DashboardAction("fleet", "F", "Fleet", "the fleet: every engine publishing to [fleet] url; Enter opens one "
                    "(through Redis), q there comes back here", footer=False, key_display="F"),
    DashboardAction("help", "question_mark", "Help", "list every key", key_display="?"),
    DashboardAction("quit", "q", "Detach", "leave the dashboard; the engine and the training go on"),
)

ACTIONS_BY_ID: dict[str, DashboardAction] = {a.id: a for a in ACTIONS}


def available(readonly: bool) -> tuple[DashboardAction, ...]:
    """The actions a dashboard offers: ``--readonly`` leaves out everything that changes state."""
    return tuple(a for a in ACTIONS if not (readonly and a.changes_state))


def bindings() -> list[Binding]:
    """``App.BINDINGS``: one ``Binding`` per action, with the action's id (for keymaps)."""
    return [
        Binding(a.key, a.action_string, a.label, show=a.footer, key_display=a.key_display, id=a.id)
        for a in ACTIONS
    ]


def check_keymap(keymap: Mapping[str, str]) -> dict[str, str]:
    """``[dashboard] keys`` checked: known ids, one key per action, no key used twice."""
    out: dict[str, str] = {}
    for action_id, keys in keymap.items():
        if action_id not in ACTIONS_BY_ID:
            raise ConfigError(
                f"[dashboard] keys: no action {action_id!r}; known: {', '.join(ACTIONS_BY_ID)}"
            )
        if not isinstance(keys, str) or not keys.strip():
            raise ConfigError(f"[dashboard] keys: {action_id} = {keys!r} is not a key; write e.g. {action_id} = 'E'")
        out[action_id] = keys.strip()
    taken: dict[str, str] = {}
    for action in ACTIONS:
        for key in effective_keys(action, out):
            if key in taken:
                raise ConfigError(
                    f"[dashboard] keys: {key!r} is bound to both {taken[key]} and {action.id}; give one of them another key"
                )
            taken[key] = action.id
    return out


def effective_keys(action: DashboardAction, keymap: Mapping[str, str]) -> tuple[str, ...]:
    """The key(s) that run ``action`` under ``keymap`` (Textual keymap syntax: ``"E,ctrl+e"``)."""
    raw = keymap.get(action.id, action.key)
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def key_label(key: str) -> str:
    """How a Textual key name is shown to people."""
    names = {"question_mark": "?", "escape": "Esc", "enter": "Enter", "space": "Space", "tab": "Tab"}
    if key in names:
        return names[key]
    if key.startswith("ctrl+"):
        return "^" + key[5:]
    return key


def help_rows(readonly: bool, keymap: Mapping[str, str]) -> Iterable[tuple[str, str, bool]]:
    """``(keys, help, asks first)`` for the help screen."""
    for a in available(readonly):
        keys = " / ".join(key_label(k) for k in effective_keys(a, keymap))
        yield keys, a.help, a.destructive
