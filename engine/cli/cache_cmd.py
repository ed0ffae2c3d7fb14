"""``cachewatch cache stats|ls|log|evict|resize|push|pull``: look at, trim, resize and move a managed cache.

``stats``, ``ls`` and ``log`` open the cache read-only: they never delete, evict or recover
anything, whatever max_size the config names (one root has one max; ``resize`` changes it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path

from ..cache import Cache, index_kwargs
from ..cache.integrity import CacheLayout
from ..config import load_config
from ..errors import CacheRootError, ConfigError
from ..sizes import format_size
from . import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="inspect and trim a managed cache", description=__doc__)
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    def root_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("root", nargs="?", metavar="ROOT", help="cache directory (default: [cache] root of the config)")

    sp = csub.add_parser("stats", help="size against target and max, entries, hits and evictions")
    root_arg(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_stats)

    sp = csub.add_parser("ls", help="list entries, least recently used first")
    root_arg(sp)
    sp.add_argument("--sort", choices=("lru", "key", "size", "created"), default="lru")
    sp.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N entries")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_ls)

    sp = csub.add_parser("log", help="the eviction log, newest first")
    root_arg(sp)
    sp.add_argument("--limit", type=int, default=20, metavar="N", help="show the N newest evictions (default 20)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_log)

    sp = csub.add_parser("evict", help="evict least recently used entries down to a size")
    root_arg(sp)
    sp.add_argument("--to", metavar="SIZE", help="size to bring the cache down to (default: the target)")
    sp.add_argument("--dry-run", action="store_true", help="only report what would be evicted")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_evict)

    sp = csub.add_parser("resize", help="change the cache's stored max_size (and target); evicts at once if over")
    root_arg(sp)
    sp.add_argument("--max-size", required=True, metavar="SIZE", help="the new max_size, e.g. 100GB")
    sp.add_argument("--target-size", metavar="SIZE", help="the new target (default: target_ratio of the max)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_resize)

    from .sync_cmd import register_actions as register_sync  # push / pull live in their own module

    register_sync(csub)


def _root_from_args(args: argparse.Namespace, *, need_index: bool = False):
    """(config, absolute root) for a cache that must already exist. With ``need_index`` the index
    file itself must be there; without, a ``.cachewatch/`` whose index is lost is let through so
    that opening it says how to rebuild it."""
    cfg = load_config(getattr(args, "config", None))
    root_arg = getattr(args, "root", None)
    root = Path(root_arg).expanduser().absolute() if root_arg else cfg.cache.root
    if root is None:
        raise ConfigError("no cache given: pass ROOT or set [cache] root in cachewatch.toml")
    root = Path(os.path.abspath(root))
    if root.exists() and not root.is_dir():
        raise CacheRootError(f"cache root '{root}' is a file, not a directory; give the cache directory")
    lay = CacheLayout.of(root)
    if not (lay.has_index() if need_index else lay.meta.is_dir()):
        raise CacheRootError(
            f"'{root}' is not a cachewatch cache (no .cachewatch/index.sqlite); check the path or [cache] root"
        )
    return cfg, root


def open_cache_readonly(args: argparse.Namespace) -> Cache:
    """The cache for stats/ls/log: read-only, the stored limits; a config max that differs is only noted."""
    cfg, root = _root_from_args(args)
    cache = Cache(root, readonly=True, sweep=False)
    same = cfg.cache.root is not None and Path(os.path.abspath(cfg.cache.root)) == root
    if same and cfg.cache.max_size is not None and cfg.cache.max_size != cache.max_bytes:
        print(
            f"note: [cache] max_size {format_size(cfg.cache.max_size)} differs from this cache's stored max "
            f"{format_size(cache.max_bytes)}; the stored one applies (change it with `cachewatch cache resize {root} --max-size SIZE`)",
            file=sys.stderr,
        )
    return cache


def open_cache_from_args(args: argparse.Namespace) -> Cache:
    """The cache named by ROOT or by the config; it must already exist (these commands never create one)."""
    cfg, root = _root_from_args(args, need_index=True)
    same = cfg.cache.root is not None and Path(os.path.abspath(cfg.cache.root)) == root
    if same and cfg.cache.max_size is not None:
        return Cache(
            root,
            max_size=cfg.cache.max_size,
            target_ratio=cfg.cache.target_ratio,
            target_size=cfg.cache.target_size,
            ttl=cfg.cache.ttl,
            sweep=False,
            **index_kwargs(cfg.cache),
        )
    return Cache(root, sweep=False, **(index_kwargs(cfg.cache) if same else {}))


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def _when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def cmd_stats(args: argparse.Namespace) -> int:
    with open_cache_readonly(args) as cache:
        s = cache.stats()
    if args.json:
        print_json(s.to_json())
        return 0
    rate = "-" if s.hit_rate is None else f"{100 * s.hit_rate:.1f} %"
    lines = [
        ("cache", s.root),
        ("size", f"{format_size(s.size_bytes, binary=False)} of {format_size(s.max_bytes, binary=False)} max ({_pct(s.size_bytes, s.max_bytes)}), "
                 f"target {format_size(s.target_bytes, binary=False)}"),
        ("entries", f"{s.entries} ({format_size(s.data_bytes, binary=False)} of data)"),
        ("in flight", f"{format_size(s.reserved_bytes, binary=False)} reserved by {s.writers} writers"),
        ("reads", f"{s.hits} hits, {s.misses} misses, hit rate {rate}"),
        ("evicted", f"{s.evicted_files} files, {format_size(s.evicted_bytes, binary=False)}"
                    + (f" ({s.expired_files} expired)" if s.expired_files else "")),
    ]
    if s.replaced_pinned_bytes:
        lines.append(("pinned old", f"{format_size(s.replaced_pinned_bytes, binary=False)} of replaced entries still being read"))
    if s.index is not None:
        lines.append(("index", f"{s.index} (shared: one bound for every node)"))
        lines.append(("nodes", ", ".join(s.nodes) or "-"))
        lines.append(("quarantined", f"{format_size(s.quarantined_bytes, binary=False)} of expired write leases awaiting the reconciler"))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with open_cache_readonly(args) as cache:
        entries = cache.entries(order=args.sort)
    if args.limit is not None:
        entries = entries[: max(0, args.limit)]
    if args.json:
        print_json([e.to_json() for e in entries])
        return 0
    out = sys.stdout
    for e in entries:
        out.write(f"{format_size(e.size_bytes, binary=False):>10}  {_when(e.accessed)}  {e.checksum or '-':16}  {e.key}\n")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    with open_cache_readonly(args) as cache:
        reports = cache.eviction_log(limit=args.limit)
    if args.json:
        print_json([r.to_json() for r in reports])
        return 0
    if not reports:
        print("no evictions yet")
    for r in reports:
        print(f"{_when(r.time)}  {r.describe()}")
    return 0


def cmd_evict(args: argparse.Namespace) -> int:
    with open_cache_from_args(args) as cache:
        report = cache.evict(to=args.to, dry_run=args.dry_run)
    if args.json:
        print_json(report.to_json())
        return 0
    print(report.describe(str(cache.root)))
    if report.pinned_skipped:
        print(f"skipped {report.pinned_skipped} pinned entries (being read)")
    return 0


def cmd_resize(args: argparse.Namespace) -> int:
    _cfg, root = _root_from_args(args)
    with Cache(root, max_size=args.max_size, target_size=args.target_size, resize=True, sweep=False) as cache:
        s = cache.stats()
    if args.json:
        print_json(s.to_json())
        return 0
    print(
        f"cache {s.root}: max_size {format_size(s.max_bytes, binary=False)}, target {format_size(s.target_bytes, binary=False)}; "
        f"holds {format_size(s.size_bytes, binary=False)} in {s.entries} entries"
    )
    return 0
