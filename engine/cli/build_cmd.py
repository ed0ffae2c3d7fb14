"""``cachewatch build``: make every missing cache entry from the source, with a pool of workers.

Resumable: run it again after an interruption and it makes only what is missing.
Exit status: 0 complete, 1 items failed (or the cache is still incomplete), 2 error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..jobs.base import run_job
from ..jobs.build import BuildJob, BuildReport
from ..jobs.console import ProgressPrinter
from ..jobs.source import SourceSpec
from ..sizes import SizeError, parse_size
from . import EXIT_OK, EXIT_PROBLEMS, print_json
from .verify_cmd import add_source_args, config_with_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="pre-build the cache from the source (resumable, parallel)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", nargs="?", metavar="ROOT", help="cache directory (default: [cache] root of the config)")
    add_source_args(p)
    p.add_argument("--transform", metavar="MODULE:FUNCTION", help="turns a source path into the bytes to cache (default: [source] transform, or the file as is)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: one per core)")
    p.add_argument("--max-size", metavar="SIZE", help="size limit when creating a new cache (default: [cache] max_size)")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress")
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    max_size = None
    if args.max_size is not None:
        try:
            max_size = parse_size(args.max_size, what="--max-size")
        except SizeError as exc:
            raise ConfigError(str(exc)) from None
    cfg = config_with_overrides(args)
    source = SourceSpec.from_config(cfg).require()
    job = BuildJob.from_config(cfg, max_size=max_size, source=source, workers=args.workers)
    printer = ProgressPrinter(quiet=args.quiet or (args.json and not sys.stderr.isatty()))
    finished, report = run_job(job, on_event=printer)
    assert isinstance(report, BuildReport)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.summary())
    return EXIT_OK if report.ok else EXIT_PROBLEMS
