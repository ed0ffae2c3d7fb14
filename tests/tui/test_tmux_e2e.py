"""End to end in a real terminal: ``cachewatch demo`` in a detached tmux session.

Keys go in with ``tmux send-keys``, the screen comes back with ``tmux capture-pane``. The
demo's cache size and eviction log change on screen, a manual eviction to a typed size
stays in view while the demo keeps evicting, ``v`` gives a verify result, ``q`` detaches
with the training still running, and ``cachewatch stop demo`` then ends it cleanly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cachewatch.engine.daemon import EngineClient
from tests.support.engine import EngineEnv
from tests.support.helpers import run_cli

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")  # CI has it

SESSION = "cw-e2e"


def tmux(*args: str, socket: str) -> str:
    return subprocess.run(["tmux", "-S", socket, *args], capture_output=True, text=True, check=True).stdout


def screen(socket: str) -> str:
    return tmux("capture-pane", "-p", "-t", SESSION, socket=socket)


def wait_screen(socket: str, predicate, what: str, timeout: float = 40.0) -> str:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = screen(socket)
        if predicate(text):
            return text
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; the screen was:\n{text}")


def cache_figure(text: str) -> str | None:
    """The cache's size and entry count as shown ("7.2 MB/8.0 MB", "439 entries")."""
    size = re.search(r"(\d+(?:\.\d+)? [kKMGT]?B)/8\.0 MB", text)
    entries = re.search(r"(\d+) entries", text)
    return f"{size.group(1)} {entries.group(1)}" if size and entries else None


def evicted_total(text: str) -> int:
    m = re.search(r"evicted (\d+) \(", text)
    return int(m.group(1)) if m else 0


def eviction_rows(text: str) -> list[str]:
    return re.findall(r"\d\d:\d\d:\d\d +\d+ +[\d.]+ [kKMGT]?B", text)


def manual_rows(text: str) -> list[str]:
    """Rows of the eviction log for a manual eviction (not the notification that says it)."""
    return re.findall(r"\d\d:\d\d:\d\d +\d+ +[\d.]+ [kKMGT]?B [^│]*manual", text)


def test_demo_in_tmux(engine_env: EngineEnv, tmp_path: Path) -> None:
    sock = str(tmp_path / "tmux.sock")
    env_prefix = (f"XDG_RUNTIME_DIR={os.environ['XDG_RUNTIME_DIR']} XDG_STATE_HOME={os.environ['XDG_STATE_HOME']} "
                  f"TERM=xterm-256color")
    cmd = f"{env_prefix} {sys.executable} -m cachewatch.engine.cli demo --dir {tmp_path}; echo DASHBOARD-EXITED $?; sleep 60"
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", cmd, socket=sock)  # the smallest supported
    try:
        # The cache fills and evicts: the size on screen takes several values and eviction rows appear.
        sizes: set[str] = set()

        def size_moved_and_evicted(t: str) -> bool:
            figure = cache_figure(t)
            if figure is not None:
                sizes.add(figure)
            return len(sizes) >= 2 and len(eviction_rows(t)) >= 1

        text = wait_screen(sock, size_moved_and_evicted, "the cache size to change and evictions to show", timeout=60)
        rows_before, evicted_before = eviction_rows(text), evicted_total(text)
        wait_screen(sock, lambda t: eviction_rows(t) != rows_before and evicted_total(t) > evicted_before,
                    "newer evictions in the log and a higher evicted count")

        # A manual eviction to a typed size, then the demo's own evictions (many a second)
        # go on: the manual row stays in view.
        tmux("send-keys", "-t", SESSION, "e", socket=sock)
        wait_screen(sock, lambda t: "Evict the cache?" in t, "the evict dialog")
        tmux("send-keys", "-t", SESSION, "-l", "3MB", socket=sock)
        tmux("send-keys", "-t", SESSION, "y", socket=sock)
        wait_screen(sock, lambda t: "Evict the cache?" not in t and manual_rows(t), "the manual eviction in the log")
        # Typed right after the dialog showed, "3MB" then y: the engine got the typed size.
        assert "evict to=3MB" in run_cli("events", "demo", "--kind", "command").stdout
        time.sleep(3)
        assert manual_rows(screen(sock)), screen(sock)

        tmux("send-keys", "-t", SESSION, "v", socket=sock)
        result = wait_screen(sock, lambda t: "Verify result" in t, "the verify result", timeout=60)
        assert "verify: the cache is clean" in result or "problems" in result
        tmux("send-keys", "-t", SESSION, "q", socket=sock)  # closes the result
        wait_screen(sock, lambda t: "Verify result" not in t, "the result to close")

        tmux("send-keys", "-t", SESSION, "q", socket=sock)  # detaches
        done = wait_screen(sock, lambda t: "DASHBOARD-EXITED" in t, "the dashboard to exit")
        assert "DASHBOARD-EXITED 0" in done and "cachewatch attach demo" in done

        with EngineClient(json.loads(run_cli("ls", "--json").stdout)[0]["socket"]) as client:
            snap = client.snapshot()
            step = (snap.progress.epoch, snap.progress.step)
            pid = snap.training.pid
            assert snap.training.state.value == "running"
            time.sleep(2)
            later = client.snapshot()
            assert (later.progress.epoch, later.progress.step) != step  # still training after the detach
        workers = [p for p in psutil.Process(pid).children(recursive=True)]
        assert len(workers) >= 2  # the DataLoader workers

        out = run_cli("stop", "demo", "--yes")
        assert out.returncode == 0, out.stderr
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert json.loads(run_cli("ls", "--json").stdout) == []
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
