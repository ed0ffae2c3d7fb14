"""Every way of launching a training passes the same pre-flight ([run] preflight, seed 004).

`run --headless`, `run` with the dashboard, bare `cachewatch` and `cachewatch demo` all go
through the engine's launch plan (engine/cli/launch.py). Each is run here in a real
pseudo-terminal, as a person would type it, through the real console entry point
(`python -m cachewatch.engine.cli`): with preflight = "require" and an incomplete cache,
each refuses before an engine or the training starts. A front end that skipped the check
would open the dashboard instead (and be killed at the timeout) or start an engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachewatch.engine.daemon import list_engines

from tests.support.engine import EngineEnv, run_cli


def _project(env: EngineEnv, mode: str, command: tuple[str, ...] = ()) -> Path:
    src = _source(env)
    cfg = env.tmp / "cachewatch.toml"
    run = f"preflight = '{mode}'\n" + (f"command = {list(command)!r}\n" if command else "")
    cfg.write_text(f"[cache]\nroot = '{env.tmp / 'cache'}'\nmax_size = '10MB'\n"
                   f"[source]\ndir = '{src}'\nglob = '*.bin'\n[run]\n{run}")
    return cfg


def _source(env: EngineEnv) -> Path:
    src = env.tmp / "source"
    src.mkdir(exist_ok=True)
    for i in range(5):
        (src / f"item{i}.bin").write_bytes(b"x" * 100)
    return src


def in_terminal(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int | None, str]:
    """``cachewatch ARGS`` with a pseudo-terminal as stdin and stdout (stderr captured).

    Returns (exit code, stderr); the code is None when it was still running at ``timeout``
    (the dashboard opened), after which it is killed.
    """
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cachewatch.engine.cli", *args],
            stdin=secondary, stdout=secondary, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TERM": "xterm-256color", **(env or {})},
        )
        try:
            _, err = proc.communicate(timeout=timeout)
            return proc.returncode, err
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            return None, err
    finally:
        os.close(primary)
        os.close(secondary)


def test_require_refuses_to_launch_on_an_incomplete_cache(engine_env: EngineEnv) -> None:
    cfg = _project(engine_env, "require")
    out = run_cli("run", "--config", str(cfg), "--headless", "--name", "pf", "--", "sleep", "60")
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("cachewatch: ") and "0 of 5" in out.stderr and "Traceback" not in out.stderr
    assert list_engines() == []  # nothing was started


@pytest.mark.parametrize("form", ["run --headless", "run", "run --foreground", "cachewatch", "demo"])
def test_every_front_end_refuses_like_headless(engine_env: EngineEnv, form: str) -> None:
    marker = engine_env.tmp / "started"
    training = (sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    env: dict[str, str] = {}
    if form == "cachewatch":  # the dashboard form: the training is [run] command of the config
        cfg = _project(engine_env, "require", command=training)
        args = ["--config", str(cfg)]
    elif form == "demo":
        # The demo writes its own config; the same settings come in through the environment.
        env = {"CACHEWATCH_RUN_PREFLIGHT": "require", "CACHEWATCH_SOURCE_DIR": str(_source(engine_env)),
               "CACHEWATCH_SOURCE_GLOB": "*.bin"}
        args = ["demo", "--dir", str(engine_env.tmp)]
    else:
        cfg = _project(engine_env, "require")
        args = [*form.split(), "--config", str(cfg), "--name", "pf", "--", *training]
    code, err = in_terminal(args, env)
    assert code == 1, f"{form}: exit {code} (None: the dashboard opened); stderr:\n{err}"
    assert "0 of 5" in err and "cachewatch build" in err and "Traceback" not in err
    assert list_engines() == [] and not marker.exists()
    if form == "demo":  # a refused demo leaves no directory behind
        assert not list(engine_env.tmp.glob("cachewatch-demo-*"))


def test_the_dashboard_form_opens_once_the_pre_flight_passes(engine_env: EngineEnv) -> None:
    # The same launch with preflight = "warn": it gets past the check and the dashboard opens
    # (still running at the timeout), so the refusal above is the pre-flight's doing.
    cfg = _project(engine_env, "warn", command=("sleep", "60"))
    code, err = in_terminal(["--config", str(cfg)], timeout=8)
    assert code is None, f"exit {code}; stderr:\n{err}"
    assert "cachewatch: warning:" in err and "0 of 5" in err


def test_warn_launches_and_says_what_is_missing(engine_env: EngineEnv) -> None:
    cfg = _project(engine_env, "warn")
    out = run_cli("run", "--config", str(cfg), "--headless", "--name", "pf", "--", "sleep", "60")
    assert out.returncode == 0, out.stderr
    assert "cachewatch: warning:" in out.stderr and "0 of 5" in out.stderr
    assert [e.name for e in list_engines()] == ["pf"]
