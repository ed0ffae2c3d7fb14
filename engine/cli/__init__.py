"""The ``cachewatch`` command line (headless part).

Each command group lives in its own module with a ``register(subparsers)``
function; :data:`COMMAND_MODULES` lists them. The dashboard package adds its
own commands on top of this parser (``cachewatch.tui.cli``); nothing here
imports Textual.

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
from typing import Any, Callable, Sequence

from .._version import __version__
from ..errors import CachewatchError

__all__ = ["build_parser", "main", "run_parsed", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_NO_ENGINE", "EXIT_INTERRUPTED"]

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"cachewatch: {message}\n")


def build_parser(extra: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cachewatch",
        description="Watch and manage a training run and its disk cache.",
    )
    parser.add_argument("--version", action="version", version=f"cachewatch {__version__}")
    parser.add_argument("--config", "-c", metavar="FILE", help="cachewatch.toml to use (default: ./cachewatch.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for register in extra:
        register(sub)
    return parser


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
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_parsed(args, parser)
