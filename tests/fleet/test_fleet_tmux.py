"""The fleet screen end to end in a real terminal (tmux): two engines in their own processes,
one real redis-server; sorting, Enter into an engine's dashboard fed from Redis, a command
through Redis, back to the fleet, and an engine killed -9 shown lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cachewatch.engine.daemon import EngineClient
from tests.support.engine import EngineEnv, wait_for
from tests.tui.test_tmux_e2e import tmux, wait_screen

from .redis_server import RedisServer
from .test_fleet_redis import fresh, start_all

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")  # CI has it

SESSION = "cw-e2e"


def hosts_in_order(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        for h in ("alpha", "beta"):
            if line.lstrip(" │").startswith(h):
                out.append(h)
    return out


def state(entry) -> str:  # noqa: ANN001
    with EngineClient(entry.socket) as c:
        return c.snapshot().training.state.value


def test_fleet_screen_sort_drill_down_command_and_back(engine_env: EngineEnv, redis_server: RedisServer,
                                                         tmp_path: Path) -> None:
    alpha, beta = start_all(engine_env, redis_server, [("trainer", "alpha", {"accept": True}), ("other", "beta", {})])
    wait_for(lambda: fresh(redis_server, {"alpha/trainer", "beta/other"}), timeout=30, what="engines fresh")
    sock = str(tmp_path / "tmux.sock")
    cmd = (f"TERM=xterm-256color {sys.executable} -m cachewatch.tui.cli fleet --url {redis_server.url}; "
           "echo FLEET-EXITED $?; sleep 60")
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "30", cmd, socket=sock)
    try:
        text = wait_screen(sock, lambda t: "alpha" in t and "beta" in t and "2 engines" in t, "both engines listed")
        assert hosts_in_order(text) == ["alpha", "beta"]
        tmux("send-keys", "-t", SESSION, "1", socket=sock)  # sort by host again: reversed
        wait_screen(sock, lambda t: hosts_in_order(t) == ["beta", "alpha"], "reversed order")
        tmux("send-keys", "-t", SESSION, "1", socket=sock)
        wait_screen(sock, lambda t: hosts_in_order(t) == ["alpha", "beta"], "host order again")

        tmux("send-keys", "-t", SESSION, "Enter", socket=sock)  # the cursor is on alpha
        wait_screen(sock, lambda t: "alpha/trainer" in t and "tick" in t, "alpha's dashboard with its output from Redis")
        tmux("send-keys", "-t", SESSION, "p", socket=sock)  # pause, through alpha's command stream
        wait_for(lambda: state(alpha) == "paused", timeout=20,
                 what="alpha paused by the remote dashboard")
        wait_screen(sock, lambda t: "paused" in t, "paused on the remote dashboard")
        tmux("send-keys", "-t", SESSION, "q", socket=sock)  # back to the fleet
        wait_screen(sock, lambda t: "2 engines" in t and "alpha" in t and "beta" in t, "the fleet again")

        os.kill(beta.pid, signal.SIGKILL)
        wait_screen(sock, lambda t: "LOST" in t and "1 lost" in t, "beta shown lost")
        tmux("send-keys", "-t", SESSION, "q", socket=sock)
        done = wait_screen(sock, lambda t: "FLEET-EXITED" in t, "the fleet screen to exit")
        assert "FLEET-EXITED 0" in done
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)


def test_F_on_an_engine_dashboard_opens_the_fleet_and_q_comes_back(engine_env: EngineEnv, redis_server: RedisServer,
                                                                   tmp_path: Path) -> None:
    from .test_fleet_redis import host_env

    start_all(engine_env, redis_server, [("home", "home-host", {}), ("far", "far-host", {"accept": True})])
    wait_for(lambda: fresh(redis_server, {"home-host/home", "far-host/far"}), timeout=30, what="engines fresh")
    env = host_env(engine_env, "home-host")
    sock = str(tmp_path / "tmux.sock")
    cmd = (f"XDG_RUNTIME_DIR={env['XDG_RUNTIME_DIR']} XDG_STATE_HOME={env['XDG_STATE_HOME']} "
           f"CACHEWATCH_FLEET_URL={redis_server.url} TERM=xterm-256color "
           f"{sys.executable} -m cachewatch.tui.cli attach home; echo DASHBOARD-EXITED $?; sleep 60")
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "30", cmd, socket=sock)
    try:
        wait_screen(sock, lambda t: " home " in t and "tick" in t, "the local dashboard")
        tmux("send-keys", "-t", SESSION, "F", socket=sock)
        wait_screen(sock, lambda t: "2 engines" in t and hosts_of(t) == ["far-host", "home-host"], "the fleet screen")
        tmux("send-keys", "-t", SESSION, "Enter", socket=sock)  # far-host sorts first
        wait_screen(sock, lambda t: "far-host/far" in t and "tick" in t and "2 engines" not in t,
                    "far's dashboard through Redis")
        tmux("send-keys", "-t", SESSION, "q", socket=sock)  # back to the local engine, not detached
        wait_screen(sock, lambda t: " home " in t and "far-host/far" not in t and "DASHBOARD-EXITED" not in t,
                    "the local engine again")
        tmux("send-keys", "-t", SESSION, "q", socket=sock)
        done = wait_screen(sock, lambda t: "DASHBOARD-EXITED" in t, "the dashboard to exit")
        assert "DASHBOARD-EXITED 0" in done
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)


def hosts_of(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        for h in ("far-host", "home-host"):
            if line.lstrip(" │").startswith(h):
                out.append(h)
    return out
