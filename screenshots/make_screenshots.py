#!/usr/bin/env python3
"""Make the SVG screenshots in this directory from the real dashboard on real engines.

    python screenshots/make_screenshots.py            # writes screenshots/*.svg

It starts ``cachewatch demo --headless`` (the example training through an 8 MB cache) in
a private runtime directory, waits until it has evicted a few times, attaches the real
dashboard (``CachewatchApp`` over the engine's socket, in Textual's headless driver at a
fixed size) and saves: the main screen at 80x24 and 160x48, the eviction log, a verify
result and the split dialog. For the OOM alert it starts a second engine whose training
prints CUDA's out-of-memory message (the text of seed 001; a machine without a GPU cannot
produce a real one) and shows the alert and its details. Both engines are stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cachewatch.engine.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, check=True, timeout=120)


async def until(pilot, predicate, what: str, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"make_screenshots: timed out waiting for {what}")
        await pilot.pause(0.2)


async def shoot(entry, size: tuple[int, int], name: str, steps=None, wait_evictions: int = 3) -> None:  # noqa: ANN001
    from cachewatch.tui.app import CachewatchApp
    from cachewatch.tui.source import EngineSource

    app = CachewatchApp(EngineSource(entry), refresh_s=0.5)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.snapshot is not None and len(app.snapshot.evictions) >= wait_evictions
                    and app.snapshot.progress is not None, "the engine's first evictions")
        await pilot.pause(1.5)  # a few polls: sparklines and the log fill in
        if steps is not None:
            await steps(app, pilot)
        await pilot.pause(0.3)
        app.save_screenshot(filename=f"{name}.svg", path=str(HERE))
        print(f"wrote screenshots/{name}.svg")


async def main() -> int:
    from cachewatch.engine.daemon import find_engine
    from cachewatch.tui.screens.job_result import JobResultScreen

    work = Path(tempfile.mkdtemp(prefix="cw-shots-"))
    run = Path(tempfile.mkdtemp(prefix="cw-", dir="/tmp"))
    os.chmod(run, 0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), XDG_STATE_HOME=str(work / "state"))
    os.environ.update(XDG_RUNTIME_DIR=env["XDG_RUNTIME_DIR"], XDG_STATE_HOME=env["XDG_STATE_HOME"])
    started: list[str] = []
    try:
        demo = json.loads(cli("demo", "--headless", "--json", "--dir", str(work), env=env).stdout)
        started.append(demo["name"])
        entry = find_engine(demo["name"])

        await shoot(entry, (80, 24), "main-80x24")
        await shoot(entry, (160, 48), "main-160x48")

        async def eviction_log(app, pilot) -> None:  # noqa: ANN001
            # A manual eviction among the demo's own (folded into one row a minute).
            await pilot.press("e", *"3MB", "y")
            await until(pilot, lambda: any(e.reason == "manual" for e in app.snapshot.evictions), "the manual eviction")
            await pilot.pause(3)
            await pilot.press("h", "z")

        await shoot(entry, (120, 36), "eviction-log", eviction_log, wait_evictions=20)

        async def verify(app, pilot) -> None:  # noqa: ANN001
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, JobResultScreen), "the verify result")

        await shoot(entry, (100, 32), "verify-result", verify)

        async def split(app, pilot) -> None:  # noqa: ANN001
            await pilot.press("s")
            await pilot.pause(0.2)
            await pilot.press(*"/data/traces/batches")
            await pilot.press("enter")
            await pilot.press(*"/data/traces/batches_split")
            await pilot.press("enter")

        await shoot(entry, (100, 32), "split-dialog", split)

        # The OOM alert: a second engine whose training prints CUDA's OOM message and goes on.
        oom_dir = work / "oom"
        oom_dir.mkdir()
        (oom_dir / "cachewatch.toml").write_text('[cache]\nroot = "cache"\nmax_size = "1MB"\n[run]\nstop_grace = "3s"\n')
        script = REPO / "tests" / "tui" / "training_script.py"
        cli("run", "--headless", "--name", "oom-demo", "--", sys.executable, "-u", str(script), "--oom-after", "40",
            env=dict(env, CACHEWATCH_CONFIG=str(oom_dir / "cachewatch.toml")), cwd=oom_dir)
        started.append("oom-demo")
        oom = find_engine("oom-demo")

        async def alert_banner(app, pilot) -> None:  # noqa: ANN001
            await until(pilot, lambda: any(a.kind == "cuda_oom" for a in app.snapshot.alerts), "the OOM alert")
            await pilot.pause(1.0)

        await shoot(oom, (120, 32), "oom-alert", alert_banner)

        async def alert_details(app, pilot) -> None:  # noqa: ANN001
            await alert_banner(app, pilot)
            await pilot.press("a")

        await shoot(oom, (100, 32), "oom-alert-details", alert_details)
    finally:
        for name in started:
            subprocess.run([sys.executable, "-m", "cachewatch.engine.cli", "stop", name, "--yes"], env=env,
                           capture_output=True, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
