"""Opening the dashboard on an engine: run the app, say how to come back.

Which engine, and whether it may start, is the engine's launch plan
(``cachewatch.engine.cli.launch``); this module only shows it.

Textual is imported here only when a dashboard is actually opened; the headless commands
(``status``, ``stop``, ``run --headless``) never load it.
"""

from __future__ import annotations

import sys
from typing import Callable

from cachewatch.engine.config import Config
from cachewatch.engine.errors import CachewatchError

from . import commands
from .source import EngineSource

__all__ = ["open_dashboard", "require_terminal", "NoTerminal"]


class NoTerminal(CachewatchError):
    pass


def require_terminal() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise NoTerminal(
            "the dashboard needs a terminal (stdin and stdout are not one); "
            "use `cachewatch status`, `cachewatch logs --follow` or `cachewatch run --headless` from scripts"
        )


def open_dashboard(source: EngineSource, cfg: Config, *, readonly: bool = False, intro: str = "",
                   after: Callable[[str], str] | None = None) -> int:
    """Run the dashboard until the user detaches. Returns the exit code.

    ``after(engine name)`` gives the lines printed once the dashboard is closed (how to
    attach again and how to stop); the default says it for any engine.
    """
    require_terminal()
    keymap = commands.check_keymap(cfg.dashboard.keys)  # a bad [dashboard] keys fails before the screen opens
    from .app import CachewatchApp

    app = CachewatchApp(source, refresh_s=cfg.dashboard.refresh, readonly=readonly or cfg.dashboard.readonly,
                        keymap=keymap, intro=intro)
    try:
        app.run()
    finally:
        source.close()
    if app.fatal_error:
        print(f"cachewatch: {app.fatal_error}", file=sys.stderr)
        return 2
    name = source.name or app.engine_name
    print((after or detach_message)(name))
    return 0


def detach_message(name: str) -> str:
    return (f"cachewatch: detached from engine {name}; it and its training keep running.\n"
            f"  attach again   cachewatch attach {name}\n"
            f"  status         cachewatch status {name}\n"
            f"  stop it        cachewatch stop {name}")
