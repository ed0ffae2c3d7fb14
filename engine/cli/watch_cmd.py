"""cachewatch watch ROOT --max 100GB: keep a cache that other code writes under its limit.

Runs in the foreground until SIGINT or SIGTERM (both stop it cleanly, exit 0),
printing a status line every --interval and a line per eviction, in the form
seed 000 grepped for (Evicted 1500 files (15.0 GB) from cache ...). With
--json the same goes out as JSON lines ({"type": "stats", ...},
{"type": "eviction", ...}). --once scans, evicts if over max (or reports
what would go with --dry-run) and exits: for cron or a quick look.

Without ROOT, every [[watch]] of the config is watched. With ROOT, a
[[watch]] for the same directory provides the defaults and flags override.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.types import EvictionReport
from ..config import WatchConfig, load_config
from ..errors import ConfigError
from ..sizes import SizeError, format_duration, format_size, parse_duration, parse_size
from . import print_json

if TYPE_CHECKING:  # the watch package pulls in numpy; a plain `cachewatch --help` should not pay for it
    from ..watch import WatchedDirectory, WatchStats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="keep a cache directory written by other code under a size limit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", nargs="?", metavar="ROOT", help="directory to watch (default: every [[watch]] in the config)")
    p.add_argument("--max", dest="max_size", metavar="SIZE", help="limit on the counted files, e.g. 100GB")
    p.add_argument("--target", metavar="SIZE|RATIO", help="eviction goes down to this: a size (90GB) or a ratio of max (0.9, 90%%)")
    p.add_argument("--include", action="append", metavar="GLOB", default=None, help="only files matching count (repeatable), e.g. '*.jpg'")
    p.add_argument("--exclude", action="append", metavar="GLOB", default=None, help="files matching never count nor go (repeatable)")
    p.add_argument("--min-age", metavar="DURATION", help="never delete a file changed more recently (default 30s)")
    p.add_argument("--scan-interval", metavar="DURATION", help="period of the reconciling full scan (default 5m)")
    p.add_argument("--dry-run", action="store_true", default=None, help="report what would be evicted, delete nothing")
    p.add_argument("--pid", type=int, action="append", metavar="PID",
                   help="only these processes and their children protect files they hold open for writing (default: all)")
    p.add_argument("--state-dir", metavar="DIR", help="where events go (default: $XDG_STATE_HOME/cachewatch/watch/<hash>)")
    p.add_argument("--scan-workers", type=int, metavar="N", help="processes for the full scan (default: one per CPU, up to 8; 0: none)")
    p.add_argument("--interval", default="10s", metavar="DURATION", help="status line period (default 10s)")
    p.add_argument("--once", action="store_true", help="scan, evict if over max, print the result and exit")
    p.add_argument("--json", action="store_true", help="machine-readable output (JSON lines while running)")
    p.add_argument("--allow-dangerous-root", action="store_true", default=None,
                   help="accept a system directory (/usr, /var...) or one holding your home as ROOT; refused otherwise")
    p.set_defaults(func=cmd_watch)


def _target(raw: str) -> dict[str, Any]:
    text = raw.strip()
    try:
        if text.endswith("%"):
            ratio = float(text[:-1]) / 100
        else:
            ratio = float(text)
            if ratio > 1:
                raise ValueError
        if not 0 < ratio <= 1:
            raise ConfigError(f"--target {raw!r} is out of range; give a ratio in (0, 1] like 0.9 or a size like 90GB")
        return {"target_ratio": ratio, "target_size": None}
    except ValueError:
        pass
    try:
        return {"target_size": parse_size(text, what="--target")}
    except SizeError as exc:
        raise ConfigError(f"{exc}; or give a ratio of max like 0.9") from None


def _writer_pids(pids: list[int] | None) -> Any:
    if not pids:
        return None
    from ..watch import process_tree

    def collect() -> list[int]:
        out: set[int] = set()
        for pid in pids:
            out.update(process_tree(pid))
        return sorted(out)

    return collect


def build_watchers(args: argparse.Namespace) -> list[WatchedDirectory]:
    from ..watch import WatchedDirectory

    cfg = load_config(getattr(args, "config", None))
    overrides: dict[str, Any] = {}
    if args.target is not None:
        overrides.update(_target(args.target))
    if args.include:
        overrides["include"] = tuple(args.include)
    if args.exclude:
        overrides["exclude"] = tuple(args.exclude)
    if args.min_age is not None:
        overrides["min_age"] = args.min_age
    if args.scan_interval is not None:
        overrides["scan_interval"] = args.scan_interval
    if args.dry_run:
        overrides["dry_run"] = True
    if args.state_dir is not None:
        overrides["state_dir"] = args.state_dir
    if args.allow_dangerous_root:
        overrides["allow_dangerous_root"] = True
    extra: dict[str, Any] = {"writer_pids": _writer_pids(args.pid)}
    if args.scan_workers is not None:
        extra["scan_workers"] = args.scan_workers

    entries: list[tuple[Path, Any, dict[str, Any]]] = []
    if args.root:
        root = Path(os.path.abspath(os.path.expanduser(args.root)))
        base: WatchConfig | None = next(
            (w for w in cfg.watch if os.path.realpath(w.root) == os.path.realpath(root)), None
        )
        values: dict[str, Any] = {}
        max_size: Any = args.max_size
        if base is not None:
            values = dict(
                target_ratio=base.target_ratio, target_size=base.target_size, include=base.include,
                exclude=base.exclude, min_age=base.min_age, scan_interval=base.scan_interval,
                dry_run=base.dry_run, state_dir=base.state_dir, allow_dangerous_root=base.allow_dangerous_root,
            )
            max_size = max_size or base.max_size
        if max_size is None:
            raise ConfigError(f"watch '{root}' needs a limit: pass --max SIZE (e.g. --max 100GB) or add a [[watch]] for it")
        if args.max_size is not None:
            try:
                max_size = parse_size(args.max_size, what="--max")
            except SizeError as exc:
                raise ConfigError(str(exc)) from None
        values.update(overrides)
        entries.append((root, max_size, values))
    else:
        if not cfg.watch:
            raise ConfigError("nothing to watch: pass ROOT --max SIZE, or add a [[watch]] with root and max_size to cachewatch.toml")
        if args.max_size is not None:
            raise ConfigError("--max needs ROOT; without ROOT the limits come from each [[watch]] in the config")
        if args.state_dir is not None and len(cfg.watch) > 1:
            raise ConfigError("--state-dir needs ROOT when the config has several [[watch]] entries")
        for w in cfg.watch:
            values = dict(
                target_ratio=w.target_ratio, target_size=w.target_size, include=w.include, exclude=w.exclude,
                min_age=w.min_age, scan_interval=w.scan_interval, dry_run=w.dry_run, state_dir=w.state_dir,
                allow_dangerous_root=w.allow_dangerous_root,
            )
            values.update(overrides)
            entries.append((w.root, w.max_size, values))
    return [WatchedDirectory(root, max_size, **values, **extra) for root, max_size, values in entries]


def _now() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


def status_line(s: WatchStats) -> str:
    pct = f"{100.0 * s.size_bytes / s.max_bytes:.0f} %" if s.max_bytes else "-"
    parts = [
        f"{_now()}  {s.root}",
        f"{format_size(s.size_bytes, binary=False)} of {format_size(s.max_bytes, binary=False)} max ({pct}), "
        f"target {format_size(s.target_bytes, binary=False)}",
        f"{s.entries} files",
    ]
    if s.growth_bytes_per_min is not None:
        parts.append(f"{'+' if s.growth_bytes_per_min >= 0 else '-'}{format_size(abs(s.growth_bytes_per_min), binary=False)}/min")
    if s.time_to_max_s is not None and s.size_bytes < s.max_bytes:
        parts.append(f"max in {format_duration(s.time_to_max_s)}")
    if s.time_to_disk_full_s is not None:
        parts.append(f"disk full in {format_duration(s.time_to_disk_full_s)}")
    if s.dry_run:
        parts.append(f"dry run: would evict {s.would_evict_files} files ({format_size(s.would_evict_bytes, binary=False)})")
    else:
        parts.append(f"evicted {s.evicted_files} files ({format_size(s.evicted_bytes, binary=False)})")
    parts.append(f"[{s.access_source}]")
    for a in s.alerts:
        parts.append(f"! {a.message}")
    if s.unreadable_paths:
        n = len(s.unreadable_paths)
        parts.append(f"! {n} unreadable director{'y' if n == 1 else 'ies'} not counted: {', '.join(s.unreadable_paths[:3])}"
                     + (" ..." if n > 3 else ""))
    return "  ".join(parts)


def _emit(obj: dict[str, Any], lock: threading.Lock) -> None:
    with lock:
        sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
        sys.stdout.flush()


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        interval = parse_duration(args.interval, what="--interval")
    except SizeError as exc:
        raise ConfigError(str(exc)) from None
    if interval <= 0:
        raise ConfigError(f"--interval {args.interval!r} must be positive, e.g. 10s")
    watchers = build_watchers(args)
    if args.once:
        return _once(watchers, args.json)
    return _run(watchers, interval, args.json)


def _once(watchers: list[WatchedDirectory], as_json: bool) -> int:
    results = []
    for w in watchers:
        scan, report = w.check_once()
        results.append((w, scan, report))
    if as_json:
        out = [
            {"stats": w.stats().to_json(), "scan": scan.to_json(), "eviction": None if r is None else r.to_json()}
            for w, scan, r in results
        ]
        print_json(out[0] if len(out) == 1 else out)
        return 0
    for w, scan, r in results:
        print(status_line(w.stats()))
        print(f"  scanned {scan.files} files in {scan.dirs} directories in {scan.duration_s:.2f} s")
        if r is not None:
            print("  " + r.describe(w.root.path))
            if r.pinned_skipped:
                print(f"  kept {r.pinned_skipped} files changed in the last {format_duration(w.min_age_s)} or open for writing")
    return 0


def _run(watchers: list[WatchedDirectory], interval: float, as_json: bool) -> int:
    stop = threading.Event()
    out_lock = threading.Lock()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    started: list[WatchedDirectory] = []
    try:
        for w in watchers:
            root = w.root.path

            def on_evict(r: EvictionReport, root: str = root) -> None:
                if as_json:
                    _emit({"type": "eviction", "root": root, **r.to_json()}, out_lock)
                else:
                    with out_lock:
                        print(f"{_now()}  {r.describe(root)}", flush=True)

            w.add_listener(on_evict)
            w.start()
            started.append(w)
            if not as_json:
                s = w.stats()
                with out_lock:
                    print(f"{_now()}  watching {root} (events in {s.events_path}); atime source: {s.access_source_reason}",
                          flush=True)
            if stop.is_set():
                break
        while not stop.is_set():
            for w in started:
                s = w.stats()
                if as_json:
                    _emit({"type": "stats", **s.to_json()}, out_lock)
                else:
                    with out_lock:
                        print(status_line(s), flush=True)
            stop.wait(interval)
    finally:
        for w in started:
            w.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for w in started:
        s = w.stats()
        if as_json:
            _emit({"type": "stopped", **s.to_json()}, out_lock)
        else:
            print(f"{_now()}  stopped watching {w.root.path}: {format_size(s.size_bytes, binary=False)} in {s.entries} files, "
                  f"evicted {s.evicted_files} files ({format_size(s.evicted_bytes, binary=False)})", flush=True)
    return 0
