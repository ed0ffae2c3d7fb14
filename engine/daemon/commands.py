"""The engine's command handlers: one per entry of :data:`protocol.COMMANDS`, no more, no less.

A handler is ``(engine, args) -> result mapping``; ``args`` were already checked against the
command's :class:`~.protocol.CommandSpec` (sizes parsed, unknown names refused). Every
``long_running`` command is started as a job through the engine's job runner, so it has no
handler of its own here. :data:`HANDLERS` is checked against the table at import time: a
command added to the table without a handler (or the reverse) fails the first import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from ..cache import Cache
from ..training.supervisor import LaunchError, Supervisor
from .errors import CommandFailed
from .protocol import COMMANDS, ErrorCode

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["HANDLERS", "Handler", "watch_root"]

Handler = Callable[["Engine", dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def _handles(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name not in COMMANDS or name in HANDLERS:
            raise ValueError(f"command {name!r} is not in protocol.COMMANDS or already has a handler")
        HANDLERS[name] = fn
        return fn

    return register


def watch_root(w: Any) -> str:
    """A watched directory's root (``WatchedDirectory.root`` is the ``RootIdentity`` opened at start)."""
    return str(w.root.path)


def _need_supervisor(engine: Engine) -> Supervisor:
    if engine.supervisor is None:
        raise CommandFailed("this engine runs no training; start one with `cachewatch run -- CMD`", ErrorCode.UNAVAILABLE.value)
    return engine.supervisor


def _need_cache(engine: Engine) -> Cache:
    if engine.cache is None:
        why = engine.cache_error or "no [cache] root in the config"
        raise CommandFailed(f"this engine has no managed cache ({why})", ErrorCode.UNAVAILABLE.value)
    return engine.cache


@_handles("evict")
def _evict(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    to = args.get("to")  # bytes: the command table parsed "80GB"
    root = args.get("root")
    target: Any = None
    if root is not None and (engine.cache is None or os.path.abspath(str(root)) != str(engine.cache.root)):
        target = next((w for w in engine.watchers if watch_root(w) == os.path.abspath(str(root))), None)
        if target is None:
            known = [str(engine.cache.root)] if engine.cache is not None else []
            known += [watch_root(w) for w in engine.watchers]
            raise CommandFailed(f"no cache or watched directory at {root!r}; known: {', '.join(known) or 'none'}",
                                ErrorCode.BAD_ARGS.value)
    if target is None:
        target = _need_cache(engine)
    report = target.evict(to=to, dry_run=bool(args.get("dry_run", False)))
    engine.poll_evictions()
    out: dict[str, Any] = report.to_json()
    out["keys"] = out["keys"][:100]
    out["root"] = str(target.root) if isinstance(target, Cache) else watch_root(target)
    out["describe"] = report.describe(out["root"])
    return out


@_handles("pause")
def _pause(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    return {"training": _need_supervisor(engine).pause().to_json()}


@_handles("resume")
def _resume(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    return {"training": _need_supervisor(engine).resume().to_json()}


@_handles("restart")
def _restart(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    sup = _need_supervisor(engine)
    if not sup.info().state.live:
        return {"training": sup.restart().to_json()}
    return {"training": engine.stop_training(sup.restart, rescan=False).to_json()}


@_handles("start")
def _start(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    sup = _need_supervisor(engine)
    if not sup.info().state.over:
        raise CommandFailed(f"the training is {sup.info().state.value}; use restart", ErrorCode.CONFLICT.value)
    try:
        return {"training": sup.restart().to_json()}
    except LaunchError as exc:
        raise CommandFailed(str(exc), ErrorCode.FAILED.value) from None


@_handles("stop")
def _stop(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    what = args.get("what", "training")
    out: dict[str, Any] = {"engine_stopping": what == "engine"}
    if engine.supervisor is not None:
        info = engine.supervisor.info()
        if not info.state.over:
            info = engine.stop_training(engine.supervisor.stop)
        out["training"] = info.to_json()
    elif what == "training":
        _need_supervisor(engine)
    if what == "engine":
        engine.request_stop("stop command")
    return out


@_handles("dismiss_alert")
def _dismiss_alert(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    aid = args.get("alert_id")
    try:
        return {"alert": engine.alerts.dismiss(str(aid)).to_json()}
    except KeyError:
        raise CommandFailed(f"no alert {aid!r}; take the id from the snapshot's alerts", ErrorCode.BAD_ARGS.value) from None


@_handles("cancel_job")
def _cancel_job(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    jid = args.get("job_id")
    try:
        return {"job": engine.jobs.cancel(str(jid)).to_json()}
    except KeyError:
        raise CommandFailed(f"no job {jid!r}; take the id from the snapshot's jobs", ErrorCode.BAD_ARGS.value) from None


def _job_handler(kind: str) -> Handler:
    """A long-running command: answered at once with its job id, progress comes as events."""

    def start(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
        factory = engine.parts.jobs.get(kind)
        if factory is None:
            raise CommandFailed(f"the {kind} job is not built into this engine yet; run `cachewatch {kind}` instead",
                                ErrorCode.UNAVAILABLE.value)
        view = engine.jobs.start(kind, lambda job: factory(engine, args, job))
        return {"job": view.to_json()}

    return start


for _spec in COMMANDS.values():
    if _spec.long_running:
        _handles(_spec.name)(_job_handler(_spec.name))

# The table and the handlers describe the same commands, or the engine does not import.
if set(HANDLERS) != set(COMMANDS):
    raise ImportError(f"commands without a handler or handlers without a command: {sorted(set(HANDLERS) ^ set(COMMANDS))}")
