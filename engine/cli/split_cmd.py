"""``cachewatch split``: split big batch files into smaller ones (seed 002's divide_conquer.py).

  cachewatch split --input traces_data/ --output traces_data_split/
  cachewatch split -i traces_data/batch_0000.pkl.gz -o traces_data_split/ -n 100
  cachewatch split --recommend

Outputs are NAME_sub0000.pkl.gz, NAME_sub0001.pkl.gz, ... written as .part files and renamed
only when every sub-batch of an input has been loaded back and compared with the original.
--delete-original removes an input only after that, and only once you confirmed (or --yes).
Formats: .pkl, .pkl.gz (lists), .npy, .npz, .pt (tensors along the first axis, or lists).

Pickle files run code when loaded: split only files from a trusted source.

Exit status: 0 done, 1 some inputs of a directory failed (they were left as they were),
2 bad input or options (nothing was changed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import CachewatchError
from ..jobs.base import run_job
from ..jobs.console import ProgressPrinter
from ..jobs.split import (
    DEFAULT_LEVEL,
    DEFAULT_PATTERN,
    DEFAULT_TRACES_PER_BATCH,
    SplitJob,
    SplitOptions,
    SplitReport,
    plan_split,
    recommend_for,
)
from ..jobs.split_formats import SplitError
from ..sizes import format_size
from . import EXIT_OK, EXIT_PROBLEMS, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="split big batch files (.pkl, .pkl.gz, .npy, .npz, .pt) into smaller ones, validated",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", "-i", metavar="INPUT", help="a batch file, or a directory of them")
    p.add_argument("--output", "-o", metavar="OUTPUT", help="directory for the sub-batches (created if missing)")
    p.add_argument("--traces-per-batch", "-n", type=int, default=DEFAULT_TRACES_PER_BATCH, metavar="N",
                   help=f"items per sub-batch (default: {DEFAULT_TRACES_PER_BATCH})")
    p.add_argument("--no-compress", action="store_true", help="write .pkl instead of .pkl.gz (and stored .npz)")
    p.add_argument("--compress-level", type=int, default=DEFAULT_LEVEL, metavar="L",
                   help=f"gzip/zip level 0-9 (default: {DEFAULT_LEVEL}; divide_conquer.py used 9, much slower)")
    p.add_argument("--delete-original", action="store_true",
                   help="delete each input once its sub-batches are written and validated (asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask before deleting originals")
    p.add_argument("--no-validate", action="store_true", help="do not load the sub-batches back to compare them (faster, less safe)")
    p.add_argument("--pattern", default=DEFAULT_PATTERN, metavar="PATTERN", help=f"files to take from an input directory (default: {DEFAULT_PATTERN})")
    p.add_argument("--workers", type=int, metavar="W", help="sub-batches compressed in parallel (default: up to 4)")
    p.add_argument("--overwrite", action="store_true", help="replace sub-batches already in OUTPUT (after the new ones are validated)")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose sub-batches are already in OUTPUT")
    p.add_argument("--recommend", action="store_true", help="print a --traces-per-batch suggestion for this machine's RAM and exit")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only the result")
    p.set_defaults(func=cmd_split)


def _confirm(plans: list, quiet: bool) -> bool:
    total = sum(pl.size_bytes for pl in plans)
    noun = "file" if len(plans) == 1 else "files"
    sys.stderr.write(
        f"Delete {len(plans)} original {noun} ({format_size(total)}) once their sub-batches are written and "
        f"validated? Make sure you have a backup. [y/N] "
    )
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_split(args: argparse.Namespace) -> int:
    if args.recommend:
        rec = recommend_for(args.input, args.pattern)
        if args.json:
            print_json(rec.to_json())
        else:
            print(rec.describe())
        return EXIT_OK
    if not args.input or not args.output:
        missing = "--input" if not args.input else "--output"
        raise SplitError(f"{missing} is required (or pass --recommend); e.g. cachewatch split -i traces_data/ -o traces_split/")
    opts = SplitOptions(
        input=args.input,
        output=args.output,
        traces_per_batch=args.traces_per_batch,
        compress=not args.no_compress,
        compress_level=args.compress_level,
        delete_original=args.delete_original,
        validate=not args.no_validate,
        pattern=args.pattern,
        workers=args.workers,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
    )
    plans = plan_split(opts)  # every input error that can be seen before writing anything
    if opts.delete_original and not args.yes:
        if not _confirm(plans, args.quiet):
            raise CachewatchError("originals kept and nothing split: --delete-original was not confirmed (answer y, or pass --yes)")
    printer = ProgressPrinter(quiet=args.quiet or (args.json and not sys.stderr.isatty()))
    finished, report = run_job(SplitJob(opts), on_event=printer)
    assert isinstance(report, SplitReport)
    if args.json:
        print_json(report.to_json())
    elif not args.quiet or not report.ok:
        print(report.summary())
    else:
        print(report.summary().splitlines()[-1])
    return EXIT_OK if report.ok else EXIT_PROBLEMS
