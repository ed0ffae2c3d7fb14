"""``cachewatch verify``: is the cache complete for its source and intact? ``--repair`` fixes it.

Exit status: 0 clean (or fully repaired), 1 problems found (or left), 2 error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ..config import Config, load_config
from ..errors import ConfigError
from ..jobs.base import run_job
from ..jobs.console import ProgressPrinter
from ..jobs.preflight import MODES, run_preflight
from ..jobs.source import SourceSpec
from ..jobs.verify import VerifyJob, VerifyReport
from ..sizes import SizeError, parse_size
from . import EXIT_OK, EXIT_PROBLEMS, print_json


def add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("source data (default: [source] in cachewatch.toml)")
    g.add_argument("--source", metavar="DIR", help="source data directory")
    g.add_argument("--glob", metavar="PATTERN", help="which files under DIR are items (default '**/*')")
    g.add_argument("--listing", metavar="FILE", help="a text file with one source path per line, instead of DIR+glob")
    g.add_argument("--key", metavar="TEMPLATE", help="cache key of an item: {relpath} {name} {stem} {suffix}")


def config_with_overrides(args: argparse.Namespace) -> Config:
    """The config, with ROOT and the source options of the command line written into it."""
    cfg = load_config(getattr(args, "config", None))
    changes = {}
    for arg, fld in (("source", "dir"), ("glob", "glob"), ("listing", "listing"), ("key", "key"), ("transform", "transform")):
        value = getattr(args, arg, None)
        if value is not None:
            if fld in ("dir", "listing"):
                value = Path(value).expanduser().absolute()
            changes[fld] = value
    if changes:
        cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, **changes))
    root = getattr(args, "root", None)
    if root:
        cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, root=Path(os.path.abspath(os.path.expanduser(root)))))
    return cfg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check the cache against its source and its checksums; --repair fixes it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", nargs="?", metavar="ROOT", help="cache directory (default: [cache] root of the config)")
    add_source_args(p)
    p.add_argument("--no-source", action="store_true", help="skip the completeness check even if a source is configured")
    p.add_argument("--repair", action="store_true", help="drop corrupt entries, re-index sound files, reclaim leftovers")
    p.add_argument("--quick", action="store_true", help="check sizes and presence only, do not hash the files")
    p.add_argument("--max-size", metavar="SIZE", help="with --repair of a cache that lost its index: its size limit (default: [cache] max_size)")
    p.add_argument("--workers", type=int, metavar="N", help="hashing threads (default: one per core)")
    p.add_argument(
        "--preflight", nargs="?", const="", choices=("",) + MODES, metavar="MODE",
        help="run the pre-flight check `cachewatch run` does (MODE: warn, require, build; default [run] preflight)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    cfg = config_with_overrides(args)
    printer = ProgressPrinter(quiet=args.quiet or (args.json and not sys.stderr.isatty()))
    if args.preflight is not None:
        mode = args.preflight or cfg.run.preflight
        if mode == "off":
            mode = "require"  # asking for a pre-flight check with preflight = off means: check
        result = run_preflight(cfg, mode, workers=args.workers, on_event=printer)
        if args.json:
            print_json(result.to_json())
        else:
            print(("ok: " if result.ok else "refused: ") + result.message)
        return EXIT_OK if result.ok else EXIT_PROBLEMS
    if cfg.cache.root is None:
        raise ConfigError("no cache given: pass ROOT or set [cache] root in cachewatch.toml")
    source = None
    if not args.no_source:
        spec = SourceSpec.from_config(cfg)
        source = spec if spec.configured else None
    max_size = cfg.cache.max_size
    if args.max_size is not None:
        try:
            max_size = parse_size(args.max_size, what="--max-size")
        except SizeError as exc:
            raise ConfigError(str(exc)) from None
    job = VerifyJob(str(cfg.cache.root), source=source, repair=args.repair, workers=args.workers,
                    checksums=not args.quick, max_size=max_size)
    finished, report = run_job(job, on_event=printer)
    assert isinstance(report, VerifyReport)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.summary())
    return EXIT_OK if report.ok else EXIT_PROBLEMS
