"""``cachewatch cache push [ROOT] URL`` and ``cachewatch cache pull URL [ROOT]``.

URL is ``s3://bucket/prefix`` (endpoint and credentials from the usual AWS variables and
files, e.g. ``AWS_ENDPOINT_URL``) or a directory on a mounted volume; without it,
``[cache] remote`` of the config. Exit status: 0 done (or already up to date), 1 problems
(a corrupt object, a failed upload; nothing half-stored), 2 bad usage, URL or credentials,
or a manifest that cannot fit under max_size, 130 interrupted (run it again to resume).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from ..cache import Cache
from ..config import Config, load_config
from ..errors import ConfigError
from ..console import LinePrinter
from ..sizes import SizeError, parse_size
from ..sync import SourceFingerprint, SyncProgress, SyncReport, open_remote, pull, push, source_fingerprint
from ..sync.transfer import DEFAULT_WORKERS
from . import EXIT_OK, EXIT_PROBLEMS, print_json

__all__ = ["register_actions", "fingerprint_from_config", "open_or_create_cache", "SyncPrinter"]


def register_actions(csub: argparse._SubParsersAction) -> None:
    """Add ``push`` and ``pull`` to the ``cachewatch cache`` group."""
    sp = csub.add_parser("push", help="upload the cache to s3://bucket/prefix or a directory (only what is missing)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("paths", nargs="*", metavar="[ROOT] URL", help="cache directory (default [cache] root) and remote (default [cache] remote)")
    sp.add_argument("--no-source", action="store_true", help="do not record the [source] fingerprint in the manifest")
    sp.add_argument("--check-remote", action="store_true",
                    help="list the remote's objects even if its newest manifest covers the cache (finds objects deleted there)")
    _common(sp)
    sp.set_defaults(func=cmd_push)

    sp = csub.add_parser("pull", help="download a pushed cache into ROOT, every object verified",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("paths", nargs="*", metavar="URL [ROOT]", help="remote (default [cache] remote) and cache directory (default [cache] root)")
    sp.add_argument("--max-size", metavar="SIZE", help="size limit when ROOT is a new cache (default: [cache] max_size)")
    _common(sp)
    sp.set_defaults(func=cmd_pull)


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N", help=f"parallel transfers (default {DEFAULT_WORKERS})")
    sp.add_argument("--dry-run", action="store_true", help="only report what would be transferred")
    sp.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    sp.add_argument("--quiet", "-q", action="store_true", help="no progress")


class SyncPrinter(LinePrinter):
    """Push/pull progress on stderr; the completion line of each phase is written once."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False, plain_interval_s: float = 5.0) -> None:
        super().__init__(stream, quiet=quiet, plain_interval_s=plain_interval_s)
        self._last_done: tuple[str, int] | None = None

    def __call__(self, p: SyncProgress) -> None:
        if self.quiet:
            return
        last = p.files_done == p.files_total and p.phase != "committing" and (p.phase, p.files_done) != self._last_done
        if last and not self.tty:
            self._last_done = (p.phase, p.files_done)
        self.draw(p.line(), p.phase, final=last)


def _split(args: argparse.Namespace, cfg: Config, url_first: bool) -> tuple[Path | None, str]:
    paths = list(args.paths)
    usage = "URL [ROOT]" if url_first else "[ROOT] URL"
    if len(paths) > 2:
        raise ConfigError(f"too many arguments {paths!r}: give {usage}")
    root_s: str | None
    url: str | None
    if len(paths) == 2:
        url, root_s = (paths[0], paths[1]) if url_first else (paths[1], paths[0])
    elif len(paths) == 1:
        url, root_s = paths[0], None
    else:
        url, root_s = None, None
    url = url or cfg.cache.remote
    if not url:
        raise ConfigError(f"no remote given: pass {usage} (s3://bucket/prefix or a directory) or set [cache] remote in cachewatch.toml")
    root = Path(os.path.abspath(os.path.expanduser(root_s))) if root_s else cfg.cache.root
    if root is None:
        raise ConfigError(f"no cache given: pass {usage} or set [cache] root in cachewatch.toml")
    return Path(os.path.abspath(root)), url


def _workers(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    return int(args.workers)


def fingerprint_from_config(cfg: Config, root: Path) -> SourceFingerprint | None:
    """The ``[source]`` fingerprint, when the config's source is the one this cache (its [cache] root) was built from."""
    from ..jobs.source import SourceSpec

    if cfg.cache.root is None or Path(os.path.abspath(cfg.cache.root)) != root:
        return None
    spec = SourceSpec.from_config(cfg)
    if not spec.configured:
        return None
    items = spec.items()
    return source_fingerprint(spec.describe(), spec.key, ((it.key, it.relpath, it.size_bytes) for it in items))


def open_or_create_cache(cfg: Config, root: Path, max_size: int | str | None) -> Cache:
    """The cache at ``root``; a new one needs its size limit (``--max-size`` or ``[cache] max_size``)."""
    same = cfg.cache.root is not None and Path(os.path.abspath(cfg.cache.root)) == root
    if max_size is None and same:
        max_size = cfg.cache.max_size
    exists = (root / ".cachewatch" / "index.sqlite").is_file()
    if not exists and max_size is None:
        raise ConfigError(
            f"cache '{root}' does not exist yet and has no size limit: pass --max-size SIZE or set [cache] max_size"
        )
    if same:
        return Cache(root, max_size=max_size, target_ratio=cfg.cache.target_ratio,
                     target_size=cfg.cache.target_size if max_size == cfg.cache.max_size else None,
                     ttl=cfg.cache.ttl, sweep=False)
    return Cache(root, max_size=max_size, sweep=False)


class _PlannedCache:
    """What a dry-run pull needs of a cache that does not exist yet, without creating it."""

    def __init__(self, root: Path, max_bytes: int, target_ratio: float) -> None:
        from ..config import target_bytes

        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        self.root = root
        self._stats = SimpleNamespace(block_bytes=os.statvfs(probe).f_frsize or 4096, max_bytes=max_bytes,
                                      target_bytes=target_bytes(max_bytes, target_ratio))

    def stats(self) -> SimpleNamespace:
        return self._stats

    def entries(self, order: str = "key") -> list[Any]:
        return []

    def __enter__(self) -> "_PlannedCache":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _cache_or_plan(cfg: Config, root: Path, max_size: int | None) -> "Cache | _PlannedCache":
    if (root / ".cachewatch" / "index.sqlite").is_file():
        return open_or_create_cache(cfg, root, max_size)
    same = cfg.cache.root is not None and Path(os.path.abspath(cfg.cache.root)) == root
    limit = max_size if max_size is not None else (cfg.cache.max_size if same else None)
    if limit is None:
        raise ConfigError(f"cache '{root}' does not exist yet and has no size limit: pass --max-size SIZE or set [cache] max_size")
    return _PlannedCache(root, limit, cfg.cache.target_ratio)


def _finish(report: SyncReport, args: argparse.Namespace) -> int:
    if args.json:
        print_json(report.to_json())
    else:
        print(report.summary())
        for line in report.problems:
            print(f"  problem: {line}", file=sys.stderr)
        if report.problem_count > len(report.problems):
            print(f"  ... and {report.problem_count - len(report.problems)} more", file=sys.stderr)
        for line in report.notes[:5]:
            print(f"  note: {line}", file=sys.stderr)
    if report.cancelled:
        return 130
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_push(args: argparse.Namespace) -> int:
    from .cache_cmd import open_cache_from_args

    cfg = load_config(getattr(args, "config", None))
    root, url = _split(args, cfg, url_first=False)
    workers = _workers(args)
    source = None if args.no_source else fingerprint_from_config(cfg, root)
    args.root = str(root)
    printer = SyncPrinter(quiet=args.quiet or (args.json and not sys.stderr.isatty()))
    with open_cache_from_args(args) as cache:
        remote = open_remote(url, create=not args.dry_run, must_exist=False, workers=workers)
        try:
            report = push(cache, remote, source=source, workers=workers, dry_run=args.dry_run,
                          check_remote=args.check_remote, on_progress=printer)
        finally:
            printer.close()
            remote.close()
    return _finish(report, args)


def cmd_pull(args: argparse.Namespace) -> int:
    cfg = load_config(getattr(args, "config", None))
    root, url = _split(args, cfg, url_first=True)
    workers = _workers(args)
    max_size = None
    if args.max_size is not None:
        try:
            max_size = parse_size(args.max_size, what="--max-size")
        except SizeError as exc:
            raise ConfigError(str(exc)) from None
    printer = SyncPrinter(quiet=args.quiet or (args.json and not sys.stderr.isatty()))
    remote = open_remote(url, create=False, workers=workers)
    try:
        opened = open_or_create_cache if not args.dry_run else _cache_or_plan
        with opened(cfg, root, max_size) as cache:
            try:
                report = pull(cache, remote, workers=workers, dry_run=args.dry_run, on_progress=printer)
            finally:
                printer.close()
    finally:
        remote.close()
    return _finish(report, args)
