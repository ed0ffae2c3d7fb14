"""The ``cachewatch`` entry point: the engine's commands plus the dashboard's.

``cachewatch``
    the dashboard on the current config's engine: attaches to it when it runs, otherwise
    starts it in the background (``[run] command`` and ``[cache]`` of ``cachewatch.toml``)
    and attaches.
``cachewatch run -- CMD``
    starts an engine running CMD in the background and opens the dashboard on it
    (``--headless`` / ``--foreground`` are the engine's own modes, no dashboard).
``cachewatch attach [NAME]``
    the dashboard on a running engine.
``cachewatch demo``
    a small real training through a small cache, and the dashboard on it.

Quitting the dashboard (``q``) detaches; the engine and the training keep running.
``--readonly`` removes every action that changes the training or the cache.

Textual is imported only when a dashboard is actually opened, so headless commands start
fast and work on machines without a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from cachewatch.engine.cli import EXIT_OK, build_parser, print_json, run_parsed
from cachewatch.engine.cli.run_cmd import prepare_run
from cachewatch.engine.config import load_config
from cachewatch.engine.daemon import runtime
from cachewatch.engine.daemon.process import resolve_name, start_daemon
from cachewatch.engine.errors import CachewatchError, ConfigError
from cachewatch.engine.training.supervisor import check_command

__all__ = ["main"]


def _readonly_arg(p: argparse.ArgumentParser, *, suppress: bool = True) -> None:
    p.add_argument("--readonly", action="store_true", default=argparse.SUPPRESS if suppress else False,
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

    run = sub.choices.get("run")
    if run is not None:
        _readonly_arg(run)
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
    from .launch import engine_for_config, open_dashboard, require_terminal
    from .source import EngineSource

    require_terminal()
    cfg = load_config(getattr(args, "config", None))
    entry = engine_for_config(cfg)
    if entry is not None:
        return open_dashboard(EngineSource(entry), cfg, readonly=_readonly(args))
    if cfg.path is None:
        raise ConfigError(
            "no engine is running and there is no cachewatch.toml here to start one from; "
            "try `cachewatch demo`, start a training with `cachewatch run -- CMD`, or `cachewatch attach NAME`"
        )
    command = tuple(cfg.run.command)
    if command:
        check_command(command, cfg.run.cwd or os.getcwd())
    elif cfg.cache.root is None:
        raise ConfigError(f"{cfg.path} has neither [run] command nor [cache] root: nothing for an engine to watch")
    name = resolve_name(cfg, command, None)
    source = EngineSource(launch=lambda: start_daemon(cfg.path, command=command, name=name), name=name)
    return open_dashboard(source, cfg, readonly=_readonly(args),
                          intro=f"started engine {name} in the background; q detaches, the engine keeps running")


def cmd_attach(args: argparse.Namespace) -> int:
    from .launch import open_dashboard, require_terminal
    from .source import EngineSource

    require_terminal()
    cfg = load_config(getattr(args, "config", None))
    entry = runtime.find_engine(args.name, config_path=cfg.path)
    return open_dashboard(EngineSource(entry), cfg, readonly=_readonly(args))


def cmd_run_dashboard(args: argparse.Namespace) -> int:
    """``cachewatch run -- CMD`` without ``--headless``/``--foreground``: engine in the background, dashboard here."""
    from .launch import check_name_free, open_dashboard
    from .source import EngineSource

    cfg, command_t, name = prepare_run(args, check_name=check_name_free)
    source = EngineSource(
        launch=lambda: start_daemon(cfg.path, command=command_t, name=name, metrics_port=args.metrics_port), name=name)
    return open_dashboard(source, cfg, readonly=_readonly(args),
                          intro=f"engine {name} runs the training in the background; q detaches, S stops the training")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_NAME, prepare_demo

    running = next((e for e in runtime.list_engines() if e.name == DEMO_NAME), None)
    if running is not None:
        setup_dir = os.path.dirname(running.config or "") or "?"
        if args.headless:
            return _print_demo(running, setup_dir, args.json)
        from .launch import open_dashboard
        from .source import EngineSource

        cfg = load_config(running.config) if running.config and os.path.isfile(running.config) else load_config(None)
        return open_dashboard(EngineSource(running), cfg, readonly=_readonly(args), after=_demo_after(setup_dir),
                              intro="the demo was already running: attached to it")
    if not args.headless:
        from .launch import require_terminal

        require_terminal()
    setup = prepare_demo(args.dir)
    cfg = load_config(setup.config_path)
    if args.headless:
        entry = start_daemon(setup.config_path, command=setup.command, name=DEMO_NAME, cwd=setup.directory)
        return _print_demo(entry, str(setup.directory), args.json)
    from .launch import open_dashboard
    from .source import EngineSource

    source = EngineSource(
        launch=lambda: start_daemon(setup.config_path, command=setup.command, name=DEMO_NAME, cwd=setup.directory),
        name=DEMO_NAME)
    return open_dashboard(source, cfg, readonly=_readonly(args), after=_demo_after(str(setup.directory)),
                          intro=f"{setup.describe()}. Eviction starts within a minute. "
                                "q detaches (the demo goes on), S stops the training, `cachewatch stop demo` ends it")


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


# -------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(extra=(register,))
    _readonly_arg(parser, suppress=False)
    args = parser.parse_args(argv)
    if args.command is None:
        args.func = cmd_dashboard
    elif args.command == "run" and not (args.headless or args.foreground) and sys.stdout.isatty() and sys.stdin.isatty():
        # Without a terminal `run` keeps the engine's behaviour (follow the output).
        args.func = cmd_run_dashboard
    return run_parsed(args, parser)


if __name__ == "__main__":
    sys.exit(main())
