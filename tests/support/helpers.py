"""Helpers for tests: run the real command line, wait for conditions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `cachewatch` command line in a subprocess."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "cachewatch.tui.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> object:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def start_stopped_at(code: str, point: str, **popen: object) -> subprocess.Popen:
    """Run ``python -c code`` with the cache's fault point ``stop:<point>`` and return once that
    real process has stopped itself there (SIGSTOP); resume it with SIGCONT."""
    env = dict(os.environ, CACHEWATCH_CRASH_AT=f"stop:{point}")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, **popen)  # type: ignore[call-overload]
    deadline = time.monotonic() + 60
    while True:
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                return proc
        assert proc.poll() is None, f"the process ended before {point}"
        assert time.monotonic() < deadline, f"the process never reached {point}"
        time.sleep(0.02)
