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

# Which module registers which command: a command line naming one command imports only its
# module (and the front end), not every command's dependencies (a CLI call started 0.8 s
# before; tests/test_smoke_layout.py checks this map against what the modules register).
COMMAND_OWNERS: dict[str, str] = {
    "cache": "cache_cmd", "monitor": "monitor_cmd", "watch": "watch_cmd", "run": "run_cmd",
    "events": "engine_cmd", "logs": "engine_cmd", "ls": "engine_cmd", "status": "engine_cmd", "stop": "engine_cmd",
    "verify": "verify_cmd", "build": "build_cmd", "split": "split_cmd", "fleet": "fleet_cmd",
}

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


def _named_command(argv: Sequence[str] | None) -> str | None:
    """The command ``argv`` names, when it is one of the engine's; None for anything else."""
    args = list(sys.argv[1:] if argv is None else argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--config", "-c"):
            i += 2
            continue
        if a.startswith("-"):
            return None  # --help, --version, a front end's option: build the whole parser
        return a if a in COMMAND_OWNERS else None
    return None


def build_parser(frontend: FrontEnd | None = None, argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``argv`` naming one engine command, only that command's part."""
    parser = _Parser(
        prog="cachewatch",
        description="Watch and manage a training run and its disk cache."
        + (" Without a command: the dashboard on this directory's engine (started from cachewatch.toml "
           "when none runs)." if frontend is not None else ""),
    )
    parser.add_argument("--version", action="version", version=f"cachewatch {__version__}")
    parser.add_argument("--config", "-c", metavar="FILE", help="cachewatch.toml to use (default: ./cachewatch.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    named = _named_command(argv) if argv is not None else None
    for name in COMMAND_MODULES if named is None else (COMMAND_OWNERS[named],):
        importlib.import_module(f"{__name__}.{name}").register(sub)
    if frontend is not None:
        frontend.register(sub)
        frontend.view_options(parser)
        if "run" in sub.choices:
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
    parser = build_parser(frontend, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None and frontend is not None:
        args.func = frontend.default
    return run_parsed(args, parser)
