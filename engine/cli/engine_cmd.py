"""``cachewatch status|stop|ls|events|logs``: talk to running engines from a shell.

Each command connects to the engine's socket as a client; none of them can stop the
training except ``stop`` (which asks first on a terminal). ``events`` and ``logs`` still work
after the engine has gone, from its state directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..config import load_config
from ..daemon import orphans, runtime
from ..daemon.client import EngineClient, connect
from ..daemon.errors import CommandFailed, ConnectionLost, EngineError, NoEngine
from ..daemon.eventtext import describe_event, format_command, format_time
from ..daemon.protocol import EventPush, LogPush, SnapshotPush
from ..daemon.results import StopResult
from ..daemon.snapshot import EngineSnapshot
from ..events import EventLog
from ..sizes import format_duration, format_size, parse_duration
from . import EXIT_OK, count, print_json

__all__ = ["register", "format_status", "follow"]


def register(sub: argparse._SubParsersAction) -> None:
    def name_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", nargs="?", metavar="NAME", help="engine name (default: the config's engine, or the only one)")

    p = sub.add_parser("status", help="what a running engine is doing: training, progress, GPU, cache, alerts")
    name_arg(p)
    p.add_argument("--json", action="store_true", help="the full snapshot as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stop", help="stop the training gracefully, then the engine (or a training whose engine was killed)")
    name_arg(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--training-only", action="store_true", help="stop the training but keep the engine")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("ls", help="running engines")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("events", help="the engine's event log: training, evictions, alerts, jobs")
    name_arg(p)
    p.add_argument("--kind", action="append", metavar="KIND", help="only kinds starting with KIND (repeatable): training, eviction, alert, job")
    p.add_argument("--since", metavar="DURATION", help="only the last DURATION (e.g. 1h)")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N past events (default 50)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("logs", help="the training's output")
    name_arg(p)
    p.add_argument("--bytes", type=int, default=16 * 1024, metavar="N", help="show the last N bytes first (default 16384)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new output")
    p.set_defaults(func=cmd_logs)


# ----------------------------------------------------------------------------------- helpers
def _config_path(args: argparse.Namespace) -> Any:
    try:
        cfg = load_config(getattr(args, "config", None))
    except Exception:
        return None
    return cfg.path


def _connect(args: argparse.Namespace, client_name: str) -> EngineClient:
    return connect(getattr(args, "name", None), config_path=_config_path(args), client_name=client_name)


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def _job_line(j: Any) -> str:
    """A running job's phase and figures; a finished job's outcome (not its last phase's counters)."""
    if j.state == "running":
        figures = f"{j.done}/{j.total} {j.unit}" if j.total else (f"{j.done} {j.unit}" if j.done else "")
        return f"{j.id} running" + (f" {j.message}" if j.message else "") + (f": {figures}" if figures else "")
    if j.state in ("failed", "cancelled"):
        return f"{j.id} {j.state}" + (f": {j.error}" if j.error else "")
    result = j.result or {}
    if j.kind == "verify":
        if result.get("ok"):
            return f"{j.id} done: the cache is clean"
        remaining = result.get("remaining") or {}
        n = sum(int(v) for v in remaining.values()) if remaining else len(result.get("problems") or ())
        return f"{j.id} done: {count(n, 'problem')} (cachewatch verify --repair)"
    if j.kind == "split" and result.get("ok") is False:
        return f"{j.id} done: some inputs failed"
    return f"{j.id} done" + (f": {j.done} {j.unit}" if j.done and j.unit else "")


def format_status(s: EngineSnapshot) -> list[str]:
    """The human ``cachewatch status`` lines for a snapshot."""
    rows: list[tuple[str, str]] = []
    e = s.engine
    rows.append(("engine", f"{e.name} (pid {e.pid}, up {format_duration(s.time - e.started)}, protocol {e.protocol})"))
    t = s.training
    if t is None:
        rows.append(("training", "none (this engine only watches)"))
    else:
        line = f"{t.state.value}"
        if t.pid:
            line += f", pid {t.pid}"
        line += f", attempt {t.attempt}, restarts {t.restarts}"
        d = t.duration_s(s.time)
        if d is not None:
            line += f", {'ran' if t.state.over else 'up'} {format_duration(d)}"
        if t.state.over or t.exit_reason and t.state.value == "restarting":
            line += f" — {t.exit_reason}"
        if t.next_restart_at:
            line += f", next try in {format_duration(max(0.0, t.next_restart_at - s.time))}"
        rows.append(("training", line))
        rows.append(("command", format_command(t.command)))
    p = s.progress
    if p is not None:
        parts = []
        epoch, total_epochs = p.epoch, p.total_epochs
        step, total_steps = p.step, p.total_steps
        if epoch is not None:
            parts.append(f"epoch {epoch}/{total_epochs or '?'}")
        if step is not None:
            parts.append(f"step {step}/{total_steps or '?'}")
        loss = p.loss
        if isinstance(loss, (int, float)):
            parts.append(f"loss {loss:.4g}")
        remaining, finish = p.eta.remaining_s, p.eta.finish_time
        eta_state, total_s = p.eta.state, p.eta.training_s
        epoch_left = p.eta.epoch_remaining_s
        if eta_state in ("finished", "stopped", "failed", "exited"):
            # Over: how it ended and how long it trained, never an ETA (issue 10 item 5).
            parts.append(f"{eta_state} after {format_duration(total_s)}" if total_s is not None else str(eta_state))
        elif remaining is not None:
            when = time.strftime("%a %H:%M", time.localtime(finish)) if finish else "?"
            parts.append(f"ETA {format_duration(remaining)} (finish {when})" + (" (paused)" if eta_state == "paused" else ""))
        elif epoch_left is not None:
            parts.append(f"epoch ends in {format_duration(epoch_left)} (number of epochs unknown)")
        step_s, avg_epoch = p.eta.step_s, p.eta.avg_epoch_s
        if step_s is not None:
            parts.append(f"{step_s:.3g} s/batch")
        if avg_epoch is not None:
            parts.append(f"avg epoch {format_duration(avg_epoch)}")
        rows.append(("progress", ", ".join(parts) or "no progress seen yet"))
    w = s.workers
    if w is not None and w.processes:
        cpu = w.cpu_percent_total
        rows.append(("workers", f"{count(w.worker_count, 'DataLoader worker')}, "
                                f"{count(len(w.processes), 'process', 'processes')}, "
                                f"CPU {'?' if cpu is None else f'{cpu:.0f} %'}, "
                                f"RSS {format_size(w.rss_bytes_total)}"))
    g = s.gpu
    if g is None:
        rows.append(("gpu", "not sampled (this engine has no GPU sampler)"))
    elif g.state != "ok" or not g.gpus:
        rows.append(("gpu", f"no GPU ({g.reason or g.state})"))
    else:
        for dev in g.gpus:
            used, total = dev.memory_used_bytes, dev.memory_total_bytes
            mem = f"{format_size(used or 0)} / {format_size(total)}" if total else "memory ?"
            util = dev.utilization_percent
            temp, power, mine = dev.temperature_c, dev.power_w, dev.training_memory_bytes
            extra = "".join([
                f", {temp:.0f} C" if temp is not None else "",
                f", {power:.0f} W" if power is not None else "",
                f", training {format_size(mine)}" if mine else "",
            ])
            rows.append((f"gpu{dev.index}", f"{dev.name or '?'} {'?' if util is None else f'{util:.0f} %'}, {mem}{extra}"))
    h = s.host
    if h is not None and h.memory.total_bytes:
        total = h.memory.total_bytes
        used = total - h.memory.available_bytes
        rows.append(("memory", f"{format_size(used)} / {format_size(total)} in use ({h.memory.percent:.0f} %)"))
    for c in s.caches:
        if c.stats is None:
            rows.append(("cache", f"{c.root}: {c.error or 'not read yet'}"))
            continue
        st = c.stats
        rate = "-" if st.hit_rate is None else f"{100 * st.hit_rate:.1f} %"
        free = f", {format_size(c.disk_free_bytes, binary=False)} free on disk" if c.disk_free_bytes is not None else ""
        rows.append(("cache", f"{c.root}: {format_size(st.size_bytes, binary=False)} of {format_size(st.max_bytes, binary=False)} "
                              f"({_pct(st.size_bytes, st.max_bytes)}), target {format_size(st.target_bytes, binary=False)}, "
                              f"{st.entries} entries, hit rate {rate}{free}"))
    for ws in s.watched:
        rows.append(("watched", f"{ws.root}: {format_size(ws.size_bytes, binary=False)} of "
                                f"{format_size(ws.max_bytes, binary=False)}, {ws.entries} files"
                                + (" (dry run)" if ws.dry_run else "")))
    if s.evictions:
        ev = s.evictions[0]
        rows.append(("eviction", f"last {format_time(ev.time)}: {ev.files} files ({format_size(ev.bytes, binary=False)}), "
                                 f"reason {ev.reason}, {format_size(ev.size_before, binary=False)} -> "
                                 f"{format_size(ev.size_after, binary=False)}"))
    for a in s.alerts:
        if a.dismissed or not a.active:
            continue
        rows.append(("alert", f"[{a.severity}] {a.title}: {a.text} (id {a.id})"))
        for r in a.remedies:
            rows.append(("", f"  - {r}"))
    for j in s.jobs[:5]:
        rows.append(("job", _job_line(j)))
    rows.append(("log", e.log_path))
    if e.metrics_url:
        rows.append(("metrics", e.metrics_url))
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows]


# ---------------------------------------------------------------------------------- commands
def cmd_status(args: argparse.Namespace) -> int:
    with _connect(args, "cachewatch status") as client:
        snap = client.snapshot()
    if args.json:
        print_json(snap.to_json())
    else:
        print("\n".join(format_status(snap)))
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _stop_orphan(args: argparse.Namespace) -> bool:
    """``stop NAME`` when no engine NAME runs: stop the training a killed engine left, if any."""
    try:
        cfg = load_config(getattr(args, "config", None))
    except Exception:
        cfg = None
    name = args.name or (cfg.run.name if cfg is not None else None)
    if name is None and cfg is not None and cfg.path is not None:
        name = runtime.default_engine_name(cfg.path)
    if name is None:
        return False
    sdir = runtime.state_dir_path(runtime.check_engine_name(name), cfg.run.log_dir if cfg is not None else None)
    if not sdir.is_dir():
        return False
    orphan = orphans.find_orphan(sdir)
    if orphan is None:
        return False
    if not args.yes and sys.stdin.isatty():
        if not _confirm(f"No engine {name!r} runs, but its training does ({orphan.describe()}). Stop it?"):
            print("not stopped", file=sys.stderr)
            return True
    grace = cfg.run.stop_grace if cfg is not None else 10.0
    ended = orphans.stop_orphan(sdir, orphan, grace)
    if args.json:
        print_json({"orphan": True, "pids": ended, "command": list(orphan.command)})
    else:
        print(f"stopped the training left by the engine {name} ({len(ended)} processes: {', '.join(map(str, ended))})")
    return True


def cmd_stop(args: argparse.Namespace) -> int:
    try:
        entry = runtime.find_engine(args.name, config_path=_config_path(args))
    except NoEngine:
        if _stop_orphan(args):
            return EXIT_OK
        raise
    what = "training" if args.training_only else "engine"
    if not args.yes and sys.stdin.isatty():
        target = "the training" if what == "training" else f"the training and the engine {entry.name!r}"
        if not _confirm(f"Stop {target} (pid {entry.pid})?"):
            print("not stopped", file=sys.stderr)
            return EXIT_OK
    with EngineClient(entry.socket, client_name="cachewatch stop") as client:
        try:
            result = client.command("stop", what=what)
        except CommandFailed as exc:
            if exc.code == "unavailable" and what == "engine":
                result = StopResult(engine_stopping=True)
            else:
                raise
    if what == "engine":
        grace = 30.0
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(e.name == entry.name for e in runtime.list_engines()):
            time.sleep(0.05)
    training = result.training
    if args.json:
        print_json(result.to_json())
        return EXIT_OK
    if training is not None:
        print(f"training: {training.exit_reason or training.state.value}")
    print(f"engine {entry.name}: " + ("stopped" if what == "engine" else "still running"))
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    engines = runtime.list_engines()
    rows = []
    for e in engines:
        state = "?"
        try:
            with EngineClient(e.socket, client_name="cachewatch ls", timeout_s=2.0) as client:
                snap = client.snapshot()
            state = "no training" if snap.training is None else snap.training.state.value
        except (OSError, EngineError):
            pass
        rows.append((e, state))
    if args.json:
        print_json([dict(e.to_json(), training_state=state) for e, state in rows])
        return EXIT_OK
    for name, orphan in _orphans(args, {e.name for e in engines}):
        print(f"cachewatch: warning: the engine {name} is gone but its training still runs ({orphan.describe()}); "
              f"`cachewatch stop {name}` stops it", file=sys.stderr)
    if not rows:
        print("no engines running")
        return EXIT_OK
    now = time.time()
    print(f"{'NAME':<24} {'PID':>7}  {'UP':>8}  {'TRAINING':<11} COMMAND")
    for e, state in rows:
        print(f"{e.name:<24} {e.pid:>7}  {format_duration(now - e.started):>8}  {state:<11} {format_command(e.command)}")
    return EXIT_OK


def _orphans(args: argparse.Namespace, live: set[str]) -> list[tuple[str, Any]]:
    """Trainings whose engine was killed: from each state directory's ``training.json``."""
    dirs: dict[str, Path] = {}
    root = runtime.state_dir_path("x").parent
    try:
        for d in root.iterdir():
            if (d / orphans.RECORD_NAME).is_file():
                dirs[d.name] = d
    except OSError:
        pass
    try:
        cfg = load_config(getattr(args, "config", None))
        if cfg.run.log_dir is not None and cfg.path is not None:
            dirs.setdefault(cfg.run.name or runtime.default_engine_name(cfg.path), Path(cfg.run.log_dir))
    except Exception:
        pass
    out = []
    for name, d in sorted(dirs.items()):
        if name in live:
            continue
        orphan = orphans.find_orphan(d)
        if orphan is not None:
            out.append((name, orphan))
    return out


def _print_event(ev: Any, as_json: bool) -> None:
    if as_json:
        import json

        sys.stdout.write(json.dumps(ev.to_json(), default=str) + "\n")
    else:
        sys.stdout.write(f"{format_time(ev.time)}  {ev.kind:<20} {describe_event(ev)}\n")
    sys.stdout.flush()


def _offline_state_dir(args: argparse.Namespace) -> Path | None:
    """The state directory of a named engine that is not running (for events/logs after the fact)."""
    if not getattr(args, "name", None):
        return None
    try:
        cfg = load_config(getattr(args, "config", None))
        log_dir = cfg.run.log_dir
    except Exception:
        log_dir = None
    path = Path(log_dir) if log_dir is not None else None
    if path is None:
        base = os.environ.get("XDG_STATE_HOME", "")
        root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
        path = root / "cachewatch" / runtime.check_engine_name(args.name)
    return path if path.is_dir() else None


def cmd_events(args: argparse.Namespace) -> int:
    since = time.time() - parse_duration(args.since, what="--since") if args.since else None
    try:
        client = _connect(args, "cachewatch events")
    except NoEngine:
        sdir = _offline_state_dir(args)
        if sdir is None or args.follow:
            raise
        for ev in EventLog(sdir / "events.jsonl").read(kinds=args.kind, since=since, limit=args.limit):
            _print_event(ev, args.json)
        return EXIT_OK
    with client:
        for ev in client.events(since=since, kinds=args.kind, limit=args.limit, follow=args.follow):
            _print_event(ev, args.json)
        if args.follow:
            try:
                for msg in client:
                    if isinstance(msg, EventPush):
                        _print_event(msg.event, args.json)
            except KeyboardInterrupt:
                pass
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        client = _connect(args, "cachewatch logs")
    except NoEngine:
        sdir = _offline_state_dir(args)
        if sdir is None or args.follow:
            raise
        from ..daemon.tail import read_chunk

        chunk = read_chunk(sdir / "training.log", -max(1, args.bytes), args.bytes)
        out.write(chunk.data.encode())
        out.flush()
        return EXIT_OK
    with client:
        chunk = client.log(-max(1, args.bytes), args.bytes, follow=args.follow)
        out.write(chunk.data.encode())
        out.flush()
        if args.follow:
            try:
                for msg in client:
                    if isinstance(msg, LogPush):
                        out.write(msg.chunk.data.encode())
                        out.flush()
            except KeyboardInterrupt:
                pass
    return EXIT_OK


def follow(client: EngineClient, *, out: Any = None, err: Any = None) -> int:
    """Print the training's output and state changes until it is over; the exit code mirrors it.

    Ctrl-C only detaches: the engine and the training go on.
    """
    out = out or sys.stdout.buffer
    err = err or sys.stderr
    start = client.hello.engine.log_start_offset if client.hello.engine is not None else 0
    client.subscribe(snapshots=True, events=True, kinds=["training", "alert"], log=True, log_offset=start)
    last_state = None
    pos = start
    try:
        for msg in client:
            if isinstance(msg, LogPush):
                if msg.chunk.next_offset <= pos:
                    continue
                out.write(msg.chunk.data.encode())
                out.flush()
                pos = msg.chunk.next_offset
            elif isinstance(msg, EventPush) and msg.event.kind == "alert":
                err.write(f"cachewatch: alert: {describe_event(msg.event)}\n")
                err.flush()
            elif isinstance(msg, SnapshotPush) and msg.snapshot.training is not None:
                t = msg.snapshot.training
                if t.state == last_state:
                    continue
                last_state = t.state
                if not t.state.over:
                    continue
                # The last output may not have been pushed yet: read it up to the end.
                while True:
                    chunk = client.log(pos, 1024 * 1024)
                    if chunk.next_offset <= pos:
                        break
                    out.write(chunk.data.encode())
                    pos = chunk.next_offset
                out.flush()
                name = msg.snapshot.engine.name
                err.write(f"cachewatch: training {t.exit_reason or t.state.value}; "
                          f"engine {name} keeps running (`cachewatch stop {name}`)\n")
                err.flush()
                if t.signal is not None or t.state.value == "failed":
                    return 1
                return int(t.exit_code or 0)
    except KeyboardInterrupt:
        err.write("\ncachewatch: detached; the training goes on. `cachewatch status` / `cachewatch stop`\n")
        return 130
    except ConnectionLost as exc:
        err.write(f"cachewatch: {exc}\n")
        return 3
    return 0
