"""Helpers for engine tests: real daemons started through the CLI, and a sweep that kills
every process a test left behind (engines and their trainings)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from cachewatch.engine.daemon import EngineClient, EngineEntry
from tests.support.helpers import REPO, run_cli, wait_for

__all__ = ["EngineEnv", "EXAMPLE", "REPO", "python_cmd", "proc_state", "run_cli", "sweep", "wait_for"]

EXAMPLE = REPO / "examples" / "train_cached.py"


@dataclass
class EngineEnv:
    runtime: Path  # $XDG_RUNTIME_DIR/cachewatch
    state: Path  # $XDG_STATE_HOME
    tmp: Path

    def state_dir(self, name: str) -> Path:
        return self.state / "cachewatch" / name

    def start(self, *command: str, name: str, args: tuple[str, ...] = (), cwd: Path | None = None,
              env: dict | None = None) -> EngineEntry:
        """``cachewatch run --headless`` for real; the entry it prints."""
        out = run_cli("run", "--headless", "--json", "--name", name, *args, "--", *command, cwd=cwd, env=env)
        assert out.returncode == 0, out.stderr
        return EngineEntry.from_json(json.loads(out.stdout))

    def client(self, entry: EngineEntry, name: str = "test") -> EngineClient:
        return EngineClient(entry.socket, client_name=name)


def _ours(proc: psutil.Process, markers: tuple[str, ...]) -> bool:
    try:
        env = proc.environ()
    except (psutil.Error, OSError):
        return False
    return any(env.get(k, "").startswith(m) for k in ("XDG_RUNTIME_DIR", "CACHEWATCH_PROGRESS_FILE") for m in markers)


def sweep(markers: tuple[str, ...]) -> list[int]:
    """Kill engines gracefully, then anything still running that belongs to this test."""
    me = os.getpid()
    procs = [p for p in psutil.process_iter() if p.pid != me and _ours(p, markers)]
    engines = [p for p in procs if any("cachewatch.engine.daemon" in a for a in _cmdline(p))]
    for p in engines:
        try:
            p.send_signal(signal.SIGTERM)  # the engine stops its training gracefully
        except psutil.Error:
            pass
    _wait_gone(engines, 15.0)
    left = [p for p in procs if _alive(p)]
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(left, 5.0)
    return [p.pid for p in left]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> None:
    # Not psutil.wait_procs: for processes that are not our children it polls coarsely.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.02)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def python_cmd(code: str) -> tuple[str, ...]:
    return (sys.executable, "-u", "-c", code)


def proc_state(pid: int) -> str:
    """The one-letter state in /proc/PID/stat: R, S, T (stopped), Z..."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]
