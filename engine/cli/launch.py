"""Launching an engine: the one path every front end takes.

``cachewatch run`` (with the dashboard, ``--headless``, ``--foreground``), bare
``cachewatch`` and ``cachewatch demo`` all call :func:`plan_launch` before anything
starts. It checks, in this process so the person at the terminal reads the answer:

1. the training command (``-- CMD`` or ``[run] command``) exists and can run;
2. the engine's name is valid and free;
3. the ``[run] preflight`` (seed 004): with ``require``, an incomplete cache refuses the
   launch; ``build`` builds what is missing first; ``warn`` says what is missing.

Only then does a :class:`LaunchPlan` exist, and only a plan starts an engine
(:meth:`LaunchPlan.start` detached, :meth:`LaunchPlan.run_foreground` in this process). A
front end therefore cannot launch a training that ``run --headless`` would refuse.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import IO, Any, Sequence

from ..config import Config
from ..daemon import runtime
from ..daemon.errors import EngineNameTaken, NoEngine
from ..daemon.process import resolve_name, run_engine, start_daemon
from ..daemon.runtime import EngineEntry
from ..errors import ConfigError
from ..training.supervisor import check_command

__all__ = ["LaunchPlan", "plan_launch", "preflight", "check_name_free", "running_engine_for"]


@dataclass(frozen=True)
class LaunchPlan:
    """An engine that passed every check and may start. Made only by :func:`plan_launch`."""

    config: Config
    command: tuple[str, ...]  # empty: an engine that watches the cache only
    name: str
    cwd: str  # the engine's working directory; the training's too unless [run] cwd says otherwise
    metrics_port: int | None = None

    def start(self) -> EngineEntry:
        """A detached engine that outlives this process and its terminal."""
        return start_daemon(self.config.path, command=self.command, name=self.name,
                            metrics_port=self.metrics_port, cwd=self.cwd)

    def run_foreground(self, echo: IO[bytes] | None = None) -> int:
        """The engine in this process until the training ends; returns the training's exit code."""
        return run_engine(self.config, name=self.name, command=self.command, cwd=self.cwd,
                          metrics_port=self.metrics_port, foreground=True, exit_with_training=True, echo=echo)


def plan_launch(cfg: Config, *, command: Sequence[str] = (), name: str | None = None, cwd: str | None = None,
                metrics_port: int | None = None, watch_only: bool = False) -> LaunchPlan:
    """Check everything a person can fix, then say what to start.

    ``command`` overrides ``[run] command``. ``watch_only`` lets an engine start without a
    training when the config has a cache or a watched directory (bare ``cachewatch``).
    Raises a :class:`~cachewatch.engine.errors.CachewatchError` naming the fix; nothing has
    started then.
    """
    if metrics_port is not None and not (0 <= metrics_port <= 65535):
        raise ConfigError(f"--metrics-port {metrics_port} is not a port; give a number from 1 to 65535")
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    command_t = tuple(command) or tuple(cfg.run.command)
    if command_t or not watch_only:
        check_command(command_t, str(cfg.run.cwd) if cfg.run.cwd else cwd)
    elif cfg.cache.root is None and not cfg.watch:
        where = cfg.path or "the configuration"
        raise ConfigError(f"{where} has neither [run] command nor [cache] root nor [[watch]]: "
                          "nothing for an engine to run or watch; add [run] command = ['python', 'train.py']")
    plan_name = resolve_name(cfg, command_t, name)
    check_name_free(plan_name)
    if command_t:
        preflight(cfg)  # a cache-only engine starts no training: nothing to check before it
    return LaunchPlan(config=cfg, command=command_t, name=plan_name, cwd=cwd, metrics_port=metrics_port)


def preflight(cfg: Config) -> None:
    """``[run] preflight``: is the cache complete for the source before the training starts (seed 004)?

    Done here, in the terminal, so a refusal or a warning is read by the person who launched;
    ``build`` builds what is missing first (Ctrl-C cancels it cleanly).
    """
    if cfg.run.preflight == "off":
        return
    try:
        from ..jobs.preflight import run_preflight  # the jobs package: verify/build/pre-flight
    except ImportError:
        raise ConfigError(
            f"[run] preflight = {cfg.run.preflight!r} needs the maintenance jobs, which this build lacks; set preflight = 'off'"
        ) from None

    def show(event: Any) -> None:
        text = getattr(event, "text", None)
        if text:
            print(f"cachewatch: pre-flight: {text}", file=sys.stderr)

    result = run_preflight(cfg, on_event=show)
    for line in result.warnings:
        print(f"cachewatch: warning: {line}", file=sys.stderr)
    if result.ok and result.message and not result.warnings:
        print(f"cachewatch: pre-flight: {result.message}", file=sys.stderr)
    result.raise_if_refused()


def check_name_free(name: str) -> None:
    for e in runtime.list_engines():
        if e.name == name:
            raise EngineNameTaken(
                f"an engine named {name!r} is already running (pid {e.pid}); attach to it with "
                f"`cachewatch attach {name}`, stop it with `cachewatch stop {name}`, or pick another --name"
            )


def running_engine_for(cfg: Config) -> EngineEntry | None:
    """The running engine this config belongs to, or None when it has none running.

    With a config: the engine of that name (``[run] name`` or the name derived from the
    config's path) or one started from that file. Without one: the only running engine.
    """
    engines = runtime.list_engines()
    if cfg.path is not None:
        wanted = {cfg.run.name, runtime.default_engine_name(cfg.path)}
        for e in engines:
            if e.name in wanted or (e.config and str(cfg.path) == e.config):
                return e
        return None
    if len(engines) == 1:
        return engines[0]
    if len(engines) > 1:
        names = ", ".join(e.name for e in engines)
        raise NoEngine(f"{len(engines)} engines are running ({names}) and no cachewatch.toml says which; "
                       "run `cachewatch attach NAME`")
    return None
