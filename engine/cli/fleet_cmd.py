"""``cachewatch fleet``: every engine publishing to the fleet's Redis, one line each.

In a terminal without ``--json``/``--watch``/``--prometheus-sd`` it opens the fleet screen
(the dashboard registers that through ``set_defaults(fleet_dashboard=...)``; this module
never imports Textual). ``--send ENGINE COMMAND`` sends one command through Redis to an
engine that accepts them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..config import FleetConfig, load_config
from ..errors import CachewatchError, ConfigError
from ..sizes import format_duration
from . import EXIT_OK, EXIT_PROBLEMS, print_json

__all__ = ["register", "format_row", "format_view", "fleet_config"]


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("fleet", help="every engine of the fleet (several machines, over Redis): state, progress, GPU, cache")
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                   help="cachewatch.toml to use (default: ./cachewatch.toml)")
    p.add_argument("--url", metavar="URL", help="Redis URL (default: [fleet] url or CACHEWATCH_FLEET_URL)")
    p.add_argument("--json", action="store_true", help="print the fleet as JSON and exit")
    p.add_argument("--watch", action="store_true", help="print the fleet again every second (Ctrl-C ends)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="with --watch: seconds between refreshes")
    p.add_argument("--prometheus-sd", metavar="FILE",
                   help="write the engines' metrics endpoints as Prometheus file-based service discovery (with --watch: keep it current)")
    p.add_argument("--send", nargs=2, metavar=("ENGINE", "COMMAND"),
                   help="send COMMAND (evict, verify, split, pause, resume, restart, stop, ...) to ENGINE (host/name or name)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="with --send: a command argument")
    p.add_argument("--yes", "-y", action="store_true", help="with --send: do not ask before a destructive command")
    p.add_argument("--readonly", action="store_true", default=argparse.SUPPRESS,
                   help="no command that changes a training or a cache")
    p.set_defaults(func=cmd_fleet, fleet_dashboard=None)


def fleet_config(args: argparse.Namespace) -> FleetConfig:
    full = load_config(getattr(args, "config", None))
    if full.dashboard.readonly:
        args.readonly = True  # [dashboard] readonly holds for the fleet too
    cfg = full.fleet
    url = getattr(args, "url", None)
    if url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--url {url!r} is not a Redis URL; write e.g. redis://host:6379/0")
        import dataclasses

        cfg = dataclasses.replace(cfg, url=url)
    if cfg.url is None:
        raise ConfigError("no fleet is configured; set [fleet] url = 'redis://host:6379/0' in cachewatch.toml, "
                          "CACHEWATCH_FLEET_URL, or give --url")
    return cfg


def cmd_fleet(args: argparse.Namespace) -> int:
    cfg = fleet_config(args)
    if args.send:
        return _send(cfg, args)
    plain = not (args.json or args.watch or args.prometheus_sd)
    if plain and args.fleet_dashboard is not None and sys.stdin.isatty() and sys.stdout.isatty():
        return int(args.fleet_dashboard(cfg, readonly=bool(getattr(args, "readonly", False))))
    from ..fleet.reader import FleetReader

    if args.interval <= 0:
        raise ConfigError(f"--interval {args.interval:g} must be a positive number of seconds")
    reader = FleetReader(cfg)
    try:
        if not args.watch:
            view = reader.read(complete=True)
            if args.prometheus_sd:
                _write_sd(args.prometheus_sd, view)
            if args.json:
                print_json(view.to_json())
            elif not args.prometheus_sd:
                print("\n".join(format_view(view)))
            if view.error:
                if args.json or args.prometheus_sd:
                    print(f"cachewatch: {view.error}", file=sys.stderr)
                return EXIT_PROBLEMS
            return EXIT_OK
        last_sd = None
        while True:
            view = reader.read(complete=True)
            if args.prometheus_sd and view.error is None:
                sd = json.dumps(_sd(view))
                if sd != last_sd:
                    _write_sd(args.prometheus_sd, view)
                    last_sd = sd
            if args.json:
                print(json.dumps(view.to_json()), flush=True)
            else:
                if sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")
                stamp = time.strftime("%H:%M:%S")
                print(f"cachewatch fleet  {view.url}  {stamp}")
                print("\n".join(format_view(view)), flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        reader.close()


def _sd(view: Any) -> list[dict[str, Any]]:
    from ..fleet.reader import prometheus_targets

    return prometheus_targets(view)


def _write_sd(path: str, view: Any) -> None:
    if view.error is not None:
        return  # Redis away: the last good file stays (Prometheus keeps scraping what it knew)
    data = json.dumps(_sd(view), indent=2) + "\n"
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise ConfigError(f"--prometheus-sd {path!r} is a directory; give a file name like {path.rstrip('/')}/cachewatch.json")
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as fh:
            fh.write(data)
        os.replace(tmp, target)  # Prometheus never reads a half-written file
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"--prometheus-sd {path!r}: cannot write ({exc.strerror}); give a writable path") from None


# ------------------------------------------------------------------------------------ lines
_HEADER = ("HOST", "ENGINE", "STATE", "PROGRESS", "ETA", "GPU", "CACHE", "ALERTS")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def format_row(row: Any, now: float) -> tuple[str, ...]:
    """One engine as the columns of :data:`_HEADER` (shared with the fleet screen)."""
    if row.lost:
        when = time.strftime("%H:%M:%S", time.localtime(row.last_beat))
        return (row.host, row.name, f"LOST {format_duration(row.age_s)} ago ({when})", "", "", "", "", "")
    s = row.summary
    if s is None:
        return (row.host, row.name, "joining", "", "", "", "", "")
    state = s.training_state or "no training"
    if s.job is not None:
        state += f", {s.job.kind}"
    progress = []
    if s.epoch is not None:
        progress.append(f"ep {s.epoch}" + (f"/{s.total_epochs}" if s.total_epochs else ""))
    if s.step is not None:
        progress.append(f"step {s.step}" + (f"/{s.total_steps}" if s.total_steps else ""))
    if s.fraction_done is not None:
        progress.append(_pct(s.fraction_done))
    eta = "-" if s.eta_s is None else format_duration(s.eta_s)
    gpu = "-"
    if s.gpus:
        util = s.gpu_utilization_percent
        used = sum(g.memory_used_bytes or 0 for g in s.gpus)
        total = sum(g.memory_total_bytes or 0 for g in s.gpus)
        gpu = f"{len(s.gpus)}x {'-' if util is None else f'{util:.0f}%'}" + (f" mem {_pct(used / total)}" if total else "")
    alerts = "-"
    if s.alerts:
        worst = max(s.alerts, key=lambda a: ("info", "warning", "error", "critical").index(a.severity)
                    if a.severity in ("info", "warning", "error", "critical") else 0)
        alerts = f"{len(s.alerts)} {worst.severity}: {worst.title}"
    return (s.host, s.name, state, " ".join(progress) or "-", eta, gpu, _pct(s.cache_used_fraction), alerts)


def format_view(view: Any) -> list[str]:
    if view.error is not None:
        return [view.error, "(no engine shown: nothing read from Redis is current)"]
    if not view.rows:
        return [f"no engine publishes to {view.url}; set [fleet] url on each machine and start its engine"]
    rows = [_HEADER] + [format_row(r, view.time) for r in view.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return out + format_shared(view)


def format_shared(view: Any) -> list[str]:
    """Which nodes write to which shared (Redis-indexed) cache, under the engine table."""
    from ..fleet.summary import shared_caches

    shared = shared_caches([r.summary for r in view.rows if r.summary is not None and not r.lost])
    if not shared:
        return []
    out = ["", "SHARED CACHES"]
    for index_id, url, nodes, engines in shared:
        out.append(f"{url} [{index_id[:8]}]  nodes: {', '.join(nodes) or '-'}  engines: {', '.join(engines)}")
    return out


# ------------------------------------------------------------------------------------- send
def _send(cfg: FleetConfig, args: argparse.Namespace) -> int:
    from ..daemon.errors import CommandFailed
    from ..daemon.protocol import COMMANDS
    from ..fleet.reader import FleetReader, RemoteEngine

    target, command = args.send
    spec = COMMANDS.get(command)
    if spec is None:
        raise ConfigError(f"--send {target} {command}: no such command; known: {', '.join(sorted(COMMANDS))}")
    cmd_args: dict[str, Any] = {}
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--arg {item!r} must be KEY=VALUE, e.g. --arg to=80GB")
        cmd_args[key] = {"true": True, "false": False}.get(value.lower(), value)
    # The same rule as the socket clients and the dashboard: this call, with these arguments
    # (an evict with dry_run=true deletes nothing and is not asked about).
    destructive = spec.is_destructive(cmd_args)
    if getattr(args, "readonly", False) and (destructive or command in ("pause", "resume", "start", "cancel_job", "dismiss_alert")):
        raise ConfigError(f"--send {command}: not allowed with --readonly")
    reader = FleetReader(cfg)
    try:
        view = reader.read(complete=True)
    finally:
        reader.close()
    if view.error:
        raise CachewatchError(view.error)
    matches = [r for r in view.rows if r.id == target or r.name == target]
    if not matches:
        known = ", ".join(r.id for r in view.rows) or "none"
        raise ConfigError(f"--send {target!r}: no such engine in the fleet (engines: {known})")
    if len(matches) > 1:
        raise ConfigError(f"--send {target!r}: {len(matches)} engines have that name; give host/name ({', '.join(r.id for r in matches)})")
    row = matches[0]
    if destructive and not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"--send {command} is destructive; add --yes to send it without a terminal")
        try:
            answer = input(f"Send {command} {cmd_args or ''} to {row.id}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not sent", file=sys.stderr)
            return EXIT_OK
    remote = RemoteEngine(cfg, row.id)
    try:
        result = remote.command(command, cmd_args)
    except CommandFailed as exc:
        print(f"cachewatch: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    finally:
        remote.close()
    if args.json:
        print_json(result)
    else:
        print(f"{row.id}: {command} done")
        if isinstance(result, dict) and result.get("describe"):
            print(result["describe"])
    return EXIT_OK
