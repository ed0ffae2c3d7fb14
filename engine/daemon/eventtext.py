"""One human line per engine event (``cachewatch events``, the dashboard's event list)."""

from __future__ import annotations

import datetime as _dt

from ..events import Event
from ..sizes import format_duration, format_size

__all__ = ["describe_event", "format_time", "format_command"]


def format_command(command: "list[str] | tuple[str, ...]") -> str:
    """A command line on one line, quoted as a shell would need it (``-c`` code keeps its ``\\n``)."""
    import shlex

    return shlex.join(command).replace("\n", "\\n")


def format_time(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def describe_event(e: Event) -> str:
    """What happened, without the time and kind (the caller prints those)."""
    f = e.get
    k = e.kind
    if k == "eviction":
        verb = "would evict" if f("dry_run") else "evicted"
        return (f"{verb} {f('files', 0)} files ({format_size(f('bytes', 0) or 0, binary=False)}) from {f('cache', '')} "
                f"(reason: {f('reason', '')}, {format_size(f('size_before', 0) or 0, binary=False)} -> "
                f"{format_size(f('size_after', 0) or 0, binary=False)})")
    if k == "training.started":
        return f"attempt {f('attempt')} started, pid {f('pid')}: {format_command(f('command') or [])}"
    if k == "training.exited":
        return f"attempt {f('attempt')} {f('reason', '')} after {format_duration(f('duration_s'))}"
    if k == "training.restarting":
        return f"restart {f('restart')}/{f('max_restarts')} in {format_duration(f('delay_s'))}"
    if k == "training.restarted":
        return "restarted by request" if f("manual") else f"restarted after a failure ({f('failure_restarts')} so far)"
    if k == "training.paused":
        return f"paused (pid {f('pid')})"
    if k == "training.resumed":
        return f"resumed after {format_duration(f('paused_s'))}"
    if k == "training.stopped":
        return f"stopped: {f('reason', '')}"
    if k == "training.failed":
        return str(f("error", ""))
    if k == "alert":
        return f"[{f('severity')}] {f('title')}: {f('text', '')} (id {f('id')})"
    if k.startswith("job."):
        total = f("total")
        progress = f"{f('done', 0)}/{total}" if total else str(f("done", 0))
        tail = f": {f('error')}" if f("error") else (f": {f('message')}" if f("message") else "")
        return f"{f('job_id')} {f('state')} {progress}{tail}"
    if k == "command":
        args = f("args") or {}
        return f"{f('command')} " + " ".join(f"{a}={v}" for a, v in args.items())
    if k == "engine.started":
        return f"engine {f('name')} started, pid {f('pid')}"
    if k == "engine.stopped":
        return f"engine stopped: {f('reason', '')}"
    return " ".join(f"{name}={value}" for name, value in e.fields.items())
