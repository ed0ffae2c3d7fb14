"""Opening the dashboard on an engine: find it or start it, run the app, say how to come back.

Textual is imported here only when a dashboard is actually opened; the headless commands
(``status``, ``stop``, ``run --headless``) never load it.
"""

from __future__ import annotations

import sys
from typing import Callable

from cachewatch.engine.config import Config
from cachewatch.engine.daemon import runtime
from cachewatch.engine.daemon.errors import EngineNameTaken, NoEngine
from cachewatch.engine.daemon.runtime import EngineEntry
from cachewatch.engine.errors import CachewatchError

from . import commands
from .source import EngineSource

__all__ = ["open_dashboard", "engine_for_config", "NoTerminal"]


class NoTerminal(CachewatchError):
    pass


def require_terminal() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise NoTerminal(
            "the dashboard needs a terminal (stdin and stdout are not one); "
            "use `cachewatch status`, `cachewatch logs --follow` or `cachewatch run --headless` from scripts"
        )


def engine_for_config(cfg: Config) -> EngineEntry | None:
    """The running engine this config belongs to, or None when it has none running.

    With a config: the engine of that name (``[run] name`` or the name derived from the
    config's path) or one started from that file. Without one: the only running engine.
    """
    engines = runtime.list_engines()
    if cfg.path is not None:
        wanted = {cfg.run.name, runtime.default_engine_name(cfg.path)}
        for e in engines:
            if e.name in wanted or (e.config and str(cfg.path) == e.config):
                return e
        return None
    if len(engines) == 1:
        return engines[0]
    if len(engines) > 1:
        names = ", ".join(e.name for e in engines)
        raise NoEngine(f"{len(engines)} engines are running ({names}) and no cachewatch.toml says which; "
                       "run `cachewatch attach NAME`")
    return None


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


def check_name_free(name: str) -> None:
    for e in runtime.list_engines():
        if e.name == name:
            raise EngineNameTaken(
                f"an engine named {name!r} is already running (pid {e.pid}); attach to it with "
                f"`cachewatch attach {name}`, stop it with `cachewatch stop {name}`, or pick another --name"
            )
