"""cachewatch run [--headless | --foreground] [--name N] [--metrics-port P] -- CMD ARGS...

Starts an engine that supervises the training command: the words after --, or [run]
command in cachewatch.toml. Before anything starts, the command is checked and [run]
preflight runs: with preflight = "require" an incomplete cache refuses the launch.

  (neither)     in a terminal: a detached engine and the dashboard on it; q detaches,
                the training goes on. Without a terminal (or without the dashboard
                installed): this shell follows the training's output; Ctrl-C detaches.
  --headless    a detached engine (its own session, output to engine.log) that outlives
                this shell and the terminal; prints how to reach it and returns at once.
  --foreground  the engine in this process, the training's output here; Ctrl-C stops
                the training gracefully; the exit code is the training's.
"""

from __future__ import annotations

import argparse
import sys

from ..config import load_config
from ..daemon.client import EngineClient
from ..daemon.eventtext import format_command
from . import EXIT_OK, print_json
from .engine_cmd import follow
from .launch import LaunchPlan, plan_launch

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="start an engine that runs and watches the training command",
        description=__doc__.split("\n\n", 1)[1],  # the usage line is argparse's own
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


def plan_run(args: argparse.Namespace) -> LaunchPlan:
    """What every form of ``cachewatch run`` starts, once the command, the name and the pre-flight pass."""
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    return plan_launch(load_config(getattr(args, "config", None)), command=command, name=args.name,
                       metrics_port=args.metrics_port)


def cmd_run(args: argparse.Namespace) -> int:
    plan = plan_run(args)
    if args.foreground:
        return plan.run_foreground(echo=sys.stdout.buffer)
    frontend = getattr(args, "frontend", None)
    if not args.headless and frontend is not None and sys.stdin.isatty() and sys.stdout.isatty():
        return frontend.view(plan, args)  # the dashboard starts the planned engine and shows it
    entry = plan.start()
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
