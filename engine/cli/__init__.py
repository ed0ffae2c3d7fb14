"""The ``cachewatch`` command line: the console script and ``python -m cachewatch.engine.cli``.

Each command group lives in its own module with a ``register(subparsers)``
function; :data:`COMMAND_MODULES` lists them. A front end (the dashboard,
``cachewatch.tui.cli``) plugs in through a :class:`FrontEnd`: its own subcommands,
the options of the commands that open it, bare ``cachewatch``, and ``run`` in a
terminal. Every launch, whatever the front end, goes through
:func:`~cachewatch.engine.cli.launch.plan_launch` (command, name, pre-flight).
Nothing here imports Textual; the front end imports it only when it opens.

Exit codes (stable, for scripts):

==== =========================================================
0    success; for ``verify``: the cache is clean
1    the command ran and found problems (``verify``), or the job failed
2    usage or configuration error, bad input; nothing was changed
3    no engine is running where one was asked for (``status``, ``stop``, ``attach``)
130  interrupted (Ctrl-C); nothing half-done is left behind
==== =========================================================
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .._version import __version__
from ..errors import CachewatchError

if TYPE_CHECKING:
    from .launch import LaunchPlan

__all__ = ["build_parser", "main", "run_parsed", "FrontEnd", "load_frontend",
           "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_NO_ENGINE", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_NO_ENGINE = 3
EXIT_INTERRUPTED = 130

# Modules under cachewatch.engine.cli, each with register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "cache_cmd", "monitor_cmd", "watch_cmd", "run_cmd", "engine_cmd", "verify_cmd", "build_cmd", "split_cmd",
    "fleet_cmd",
)

# Front ends that register themselves when installed (each module has ``FRONTEND``).
FRONTEND_MODULES: tuple[str, ...] = ("cachewatch.tui.cli",)


@dataclass(frozen=True)
class FrontEnd:
    """What a front end plugs into this command line.

    ``register(subparsers)`` adds its own subcommands; ``view_options(parser)`` adds its
    options to the commands that open it (bare ``cachewatch`` and ``run``); ``default(args)``
    is bare ``cachewatch``; ``view(plan, args)`` opens it on a launch that
    :func:`~cachewatch.engine.cli.launch.plan_launch` has passed (``run`` in a terminal).
    The module that defines it must import no Textual at import time: ``--help`` and every
    headless command load it.
    """

    register: Callable[[Any], None]
    view_options: Callable[[argparse.ArgumentParser], None]
    default: Callable[[argparse.Namespace], int]
    view: Callable[["LaunchPlan", argparse.Namespace], int]


def load_frontend() -> FrontEnd | None:
    """The installed front end, or None (an engine-only install: no dashboard commands)."""
    for module in FRONTEND_MODULES:
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # not installed; a missing dependency inside it is a real error
            raise
        return found.FRONTEND
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"cachewatch: {message}\n")


def build_parser(frontend: FrontEnd | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cachewatch",
        description="Watch and manage a training run and its disk cache."
        + (" Without a command: the dashboard on this directory's engine (started from cachewatch.toml "
           "when none runs)." if frontend is not None else ""),
    )
    parser.add_argument("--version", action="version", version=f"cachewatch {__version__}")
    parser.add_argument("--config", "-c", metavar="FILE", help="cachewatch.toml to use (default: ./cachewatch.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    if frontend is not None:
        frontend.register(sub)
        frontend.view_options(parser)
        frontend.view_options(sub.choices["run"])
    parser.set_defaults(frontend=frontend)
    return parser


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 process``, ``3 processes``: a figure with its noun, singular when it is one."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def run_parsed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except CachewatchError as exc:
        print(f"cachewatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cachewatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    frontend = load_frontend()
    parser = build_parser(frontend)
    args = parser.parse_args(argv)
    if args.command is None and frontend is not None:
        args.func = frontend.default
    return run_parsed(args, parser)
