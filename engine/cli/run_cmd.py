"""``cachewatch run [--headless | --foreground] [--name N] [--metrics-port P] -- CMD ARGS...``

Starts an engine that supervises the training command:

``--headless``
    a detached engine (its own session, stdio to ``engine.log``) that outlives this shell
    and the terminal; prints how to reach it and returns at once.
``--foreground``
    the engine in this process, the training's output on this terminal; Ctrl-C stops the
    training gracefully; the exit code is the training's.
neither
    a detached engine, then this terminal follows its output (the dashboard will take this
    place); Ctrl-C only detaches, the training goes on.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from ..config import Config, load_config
from ..daemon.client import EngineClient
from ..daemon.eventtext import format_command
from ..daemon.process import resolve_name, run_engine, start_daemon
from ..errors import ConfigError
from ..training.supervisor import check_command
from . import EXIT_OK, print_json
from .engine_cmd import follow

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="start an engine that runs and watches the training command",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                   help="cachewatch.toml to use (default: ./cachewatch.toml)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--headless", action="store_true", help="detach: the engine outlives this terminal")
    mode.add_argument("--foreground", action="store_true", help="keep the engine in this terminal; Ctrl-C stops the training")
    p.add_argument("--name", metavar="NAME", help="engine name (default: from the config's directory or the script)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on 127.0.0.1:PORT ([metrics] host to change)")
    p.add_argument("--json", action="store_true", help="with --headless: print the engine's entry as JSON")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the training command")
    p.set_defaults(func=cmd_run)


def preflight(cfg: Config) -> None:
    """``[run] preflight``: is the cache complete for the source before the training starts (seed 004)?

    Done here, in the terminal, so a refusal or a warning is read by the person who launched;
    ``build`` builds what is missing first (Ctrl-C cancels it cleanly).
    """
    if cfg.run.preflight == "off":
        return
    try:
        from ..jobs.preflight import run_preflight  # the jobs package: verify/build/pre-flight
    except ImportError:
        raise ConfigError(
            f"[run] preflight = {cfg.run.preflight!r} needs the maintenance jobs, which this build lacks; set preflight = 'off'"
        ) from None

    def show(event: Any) -> None:
        text = getattr(event, "text", None)
        if text:
            print(f"cachewatch: pre-flight: {text}", file=sys.stderr)

    result = run_preflight(cfg, on_event=show)
    for line in result.warnings:
        print(f"cachewatch: warning: {line}", file=sys.stderr)
    if result.ok and result.message and not result.warnings:
        print(f"cachewatch: pre-flight: {result.message}", file=sys.stderr)
    result.raise_if_refused()


def prepare_run(args: argparse.Namespace, check_name: Callable[[str], None] | None = None) -> tuple[Config, tuple[str, ...], str]:
    """What every form of ``cachewatch run`` does before it starts anything: the config, the
    command (``-- CMD`` or ``[run] command``), checked to exist, the engine's name (``check_name``
    may refuse it), then the pre-flight."""
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    cfg = load_config(getattr(args, "config", None))
    if args.metrics_port is not None and not (0 <= args.metrics_port <= 65535):
        raise ConfigError(f"--metrics-port {args.metrics_port} is not a port; give a number from 1 to 65535")
    command_t = tuple(command) or cfg.run.command
    check_command(command_t, cfg.run.cwd or os.getcwd())
    name = resolve_name(cfg, command_t, args.name)
    if check_name is not None:
        check_name(name)
    preflight(cfg)
    return cfg, command_t, name


def cmd_run(args: argparse.Namespace) -> int:
    cfg, command, name = prepare_run(args)

    if args.foreground:
        code = run_engine(
            cfg,
            name=name,
            command=command,
            cwd=os.getcwd(),
            metrics_port=args.metrics_port,
            foreground=True,
            exit_with_training=True,
            echo=sys.stdout.buffer,
        )
        return code

    entry = start_daemon(cfg.path, command=command, name=name, metrics_port=args.metrics_port)
    if args.headless:
        if args.json:
            print_json(entry.to_json())
            return EXIT_OK
        print(f"engine {entry.name} started (pid {entry.pid}); training: {format_command(entry.command)}")
        print(f"  status   cachewatch status {entry.name}")
        print(f"  output   cachewatch logs {entry.name} --follow    ({entry.log_path})")
        print(f"  events   cachewatch events {entry.name} --follow")
        print(f"  stop     cachewatch stop {entry.name}")
        if entry.metrics_url:
            print(f"  metrics  {entry.metrics_url}")
        return EXIT_OK
    print(f"cachewatch: engine {entry.name} started (pid {entry.pid}); Ctrl-C detaches, the training goes on", file=sys.stderr)
    with EngineClient(entry.socket, client_name="cachewatch run") as client:
        return follow(client)
