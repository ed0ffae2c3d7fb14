"""`cachewatch run` checks the cache against the source before launching ([run] preflight, seed 004)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cachewatch.engine.daemon import list_engines

from .util import EngineEnv, run_cli


def _project(env: EngineEnv, mode: str) -> Path:
    src = env.tmp / "source"
    src.mkdir()
    for i in range(5):
        (src / f"item{i}.bin").write_bytes(b"x" * 100)
    cfg = env.tmp / "cachewatch.toml"
    cfg.write_text(f"[cache]\nroot = '{env.tmp / 'cache'}'\nmax_size = '10MB'\n"
                   f"[source]\ndir = '{src}'\nglob = '*.bin'\n[run]\npreflight = '{mode}'\n")
    return cfg


def test_require_refuses_to_launch_on_an_incomplete_cache(engine_env: EngineEnv) -> None:
    cfg = _project(engine_env, "require")
    out = run_cli("run", "--config", str(cfg), "--headless", "--name", "pf", "--", "sleep", "60")
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("cachewatch: ") and "0 of 5" in out.stderr and "Traceback" not in out.stderr
    assert list_engines() == []  # nothing was started


def test_run_with_the_dashboard_refuses_like_headless(engine_env: EngineEnv) -> None:
    # `cachewatch run -- CMD` in a terminal opens the dashboard; it must pass the same pre-flight
    # as --headless, before an engine or the training starts.
    cfg = _project(engine_env, "require")
    marker = engine_env.tmp / "started"
    primary, secondary = os.openpty()  # a terminal: the form that opens the dashboard
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cachewatch.tui.cli", "run", "--config", str(cfg), "--name", "pf", "--",
             sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
            stdin=secondary, stdout=secondary, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # the dashboard opened: the pre-flight was skipped
                proc.kill()
                proc.wait()
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 1, err
    assert "0 of 5" in err and "cachewatch build" in err
    assert list_engines() == [] and not marker.exists()


def test_warn_launches_and_says_what_is_missing(engine_env: EngineEnv) -> None:
    cfg = _project(engine_env, "warn")
    out = run_cli("run", "--config", str(cfg), "--headless", "--name", "pf", "--", "sleep", "60")
    assert out.returncode == 0, out.stderr
    assert "cachewatch: warning:" in out.stderr and "0 of 5" in out.stderr
    assert [e.name for e in list_engines()] == ["pf"]
