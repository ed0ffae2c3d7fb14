"""The dashboard's part of the ``cachewatch`` command line (a :class:`FrontEnd` of the engine's).

The command line belongs to the engine (``cachewatch.engine.cli``, the console script);
this module plugs the dashboard into it:

``cachewatch``
    the dashboard on the current config's engine: attaches to it when it runs, otherwise
    starts it in the background (``[run] command`` and ``[cache]`` of ``cachewatch.toml``)
    and attaches.
``cachewatch run -- CMD``
    in a terminal: starts an engine running CMD in the background and opens the dashboard
    on it (``--headless`` / ``--foreground`` are the engine's own modes, no dashboard).
``cachewatch attach [NAME]``
    the dashboard on a running engine.
``cachewatch demo``
    a small real training through a small cache, and the dashboard on it.

Every engine these start comes from the engine's launch plan
(:func:`cachewatch.engine.cli.launch.plan_launch`): the command, the name and the
``[run] preflight`` are checked in the terminal before the dashboard opens, exactly as for
``run --headless``.

Quitting the dashboard (``q``) detaches; the engine and the training keep running.
``--readonly`` removes every action that changes the training or the cache.

This module imports no Textual: the engine loads it to build ``--help`` and for every
command. Textual is imported only when a dashboard is actually opened.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any, Sequence

from cachewatch.engine.cli import EXIT_OK, FrontEnd, print_json
from cachewatch.engine.config import Config, load_config
from cachewatch.engine.daemon import runtime
from cachewatch.engine.errors import CachewatchError, ConfigError

if TYPE_CHECKING:  # the launch plan pulls in the whole engine: imported where a command needs it
    from cachewatch.engine.cli.launch import LaunchPlan

__all__ = ["FRONTEND", "main", "register"]


def _readonly_arg(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: `cachewatch --readonly run ...` is not undone by run's own default.
    p.add_argument("--readonly", action="store_true", default=argparse.SUPPRESS,
                   help="no action that changes the training or the cache (evict, split, pause, restart, stop)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("attach", help="open the dashboard on a running engine (q detaches; the training goes on)")
    p.add_argument("name", nargs="?", metavar="NAME", help="engine name (default: the config's engine, or the only one)")
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                   help="cachewatch.toml to use (default: ./cachewatch.toml)")
    _readonly_arg(p)
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("demo", help="a small real training through a small cache, with the dashboard: eviction within a minute")
    _readonly_arg(p)
    p.add_argument("--headless", action="store_true", help="start the demo engine and print how to reach it; no dashboard")
    p.add_argument("--dir", metavar="DIR", help="make the demo's temporary directory under DIR (default: the system's)")
    p.add_argument("--json", action="store_true", help="with --headless: print the engine's entry and the demo directory as JSON")
    p.set_defaults(func=cmd_demo)

    fleet = sub.choices.get("fleet")
    if fleet is not None:  # `cachewatch fleet` in a terminal: the fleet screen (tui/screens/fleet.py)
        fleet.set_defaults(fleet_dashboard=_fleet_dashboard)


def _fleet_dashboard(cfg: Any, readonly: bool) -> int:
    from .screens.fleet import open_fleet

    return open_fleet(cfg, readonly=readonly)


def _readonly(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "readonly", False))


# ---------------------------------------------------------------------------------- commands
def cmd_dashboard(args: argparse.Namespace) -> int:
    """``cachewatch`` with no command."""
    from cachewatch.engine.cli.launch import plan_launch, running_engine_for

    from .launch import require_terminal

    require_terminal()
    cfg = load_config(getattr(args, "config", None))
    entry = running_engine_for(cfg)
    if entry is not None:
        return _open(entry, cfg, args)
    if cfg.path is None:
        raise ConfigError(
            "no engine is running and there is no cachewatch.toml here to start one from; "
            "try `cachewatch demo`, start a training with `cachewatch run -- CMD`, or `cachewatch attach NAME`"
        )
    plan = plan_launch(cfg, watch_only=True)
    return _open(plan, cfg, args, intro=f"started engine {plan.name} in the background; q detaches, the engine keeps running")


def view_plan(plan: LaunchPlan, args: argparse.Namespace) -> int:
    """``cachewatch run -- CMD`` in a terminal: the planned engine in the background, the dashboard here."""
    return _open(plan, plan.config, args,
                 intro=f"engine {plan.name} runs the training in the background; q detaches, S stops the training")


def cmd_attach(args: argparse.Namespace) -> int:
    from .launch import require_terminal

    require_terminal()
    cfg = load_config(getattr(args, "config", None))
    entry = runtime.find_engine(args.name, config_path=cfg.path)
    return _open(entry, cfg, args)


def cmd_demo(args: argparse.Namespace) -> int:
    from cachewatch.engine.cli.launch import plan_launch

    from .demo import DEMO_NAME, prepare_demo

    running = next((e for e in runtime.list_engines() if e.name == DEMO_NAME), None)
    if running is not None:
        setup_dir = os.path.dirname(running.config or "") or "?"
        if args.headless:
            return _print_demo(running, setup_dir, args.json)
        cfg = load_config(running.config) if running.config and os.path.isfile(running.config) else load_config(None)
        return _open(running, cfg, args, after=_demo_after(setup_dir), intro="the demo was already running: attached to it")
    if not args.headless:
        from .launch import require_terminal

        require_terminal()
    setup = prepare_demo(args.dir)
    try:
        cfg = load_config(setup.config_path)
        plan = plan_launch(cfg, command=setup.command, name=DEMO_NAME, cwd=str(setup.directory))
    except CachewatchError:
        shutil.rmtree(setup.directory, ignore_errors=True)  # refused before anything ran: leave nothing behind
        raise
    if args.headless:
        return _print_demo(plan.start(), str(setup.directory), args.json)
    return _open(plan, cfg, args, after=_demo_after(str(setup.directory)),
                 intro=f"{setup.describe()}. Eviction starts within a minute. "
                       "q detaches (the demo goes on), S stops the training, `cachewatch stop demo` ends it")


def _open(target: LaunchPlan | runtime.EngineEntry, cfg: Config, args: argparse.Namespace, *, intro: str = "",
          after: Any = None) -> int:
    """The dashboard on a running engine, or on a planned one that it starts (on its first poll,
    so the screen is up while the engine starts)."""
    from cachewatch.engine.cli.launch import LaunchPlan

    from .launch import open_dashboard
    from .source import EngineSource

    if isinstance(target, LaunchPlan):
        source = EngineSource(launch=target.start, name=target.name)
    else:
        source = EngineSource(target)
    return open_dashboard(source, cfg, readonly=_readonly(args), intro=intro, after=after)


def _demo_after(directory: str) -> Any:
    def message(name: str) -> str:
        return (f"cachewatch: detached; the demo keeps training in the background.\n"
                f"  attach again   cachewatch attach {name}\n"
                f"  stop it        cachewatch stop {name} --yes\n"
                f"  its files      {directory} (remove the directory once it is stopped)")

    return message


def _print_demo(entry: runtime.EngineEntry, directory: str, as_json: bool) -> int:
    if as_json:
        out = entry.to_json()
        out["demo_dir"] = directory
        print_json(out)
        return EXIT_OK
    print(f"demo engine {entry.name} (pid {entry.pid}) is training in {directory}")
    print(f"  dashboard   cachewatch attach {entry.name}")
    print(f"  stop it     cachewatch stop {entry.name} --yes")
    return EXIT_OK


FRONTEND = FrontEnd(register=register, view_options=_readonly_arg, default=cmd_dashboard, view=view_plan)


def main(argv: Sequence[str] | None = None) -> int:
    """The engine's command line (kept so ``python -m cachewatch.tui.cli`` goes on working)."""
    from cachewatch.engine.cli import main as engine_main

    return engine_main(argv)


if __name__ == "__main__":
    sys.exit(main())
