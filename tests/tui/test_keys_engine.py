"""Each key against a real headless engine: the engine receives the command, the screen shows the outcome.

The engine is started with the real ``cachewatch run --headless``; its training is a small
script writing into a real managed cache (so it evicts); the dashboard attaches through the
real socket. What the engine received is read back from its own event log (``command``
events) and its snapshots, through a second client, not from the dashboard.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from cachewatch.engine.daemon import EngineClient, EngineEntry
from cachewatch.engine.sizes import parse_size
from cachewatch.tui.app import CachewatchApp
from cachewatch.tui.screens.alert_details import AlertDetailsScreen
from cachewatch.tui.screens.confirm import ConfirmationModal
from cachewatch.tui.screens.evict import EvictDialog
from cachewatch.tui.screens.help import HelpScreen
from cachewatch.tui.screens.job_result import JobResultScreen
from cachewatch.tui.screens.split import SplitDialog
from cachewatch.tui.source import EngineSource
from cachewatch.tui.widgets.eviction_log import EvictionLog
from cachewatch.tui.widgets.training_panel import TrainingPanel
from tests.support.engine import EngineEnv, proc_state

SCRIPT = Path(__file__).with_name("training_script.py")
SIZE = (120, 40)


def start_engine(env: EngineEnv, name: str, *script_args: str) -> EngineEntry:
    (env.tmp / "cachewatch.toml").write_text(
        '[cache]\nroot = "cache"\nmax_size = "1MB"\n\n[run]\nstop_grace = "3s"\n\n[monitor]\ninterval = "0.2s"\n'
    )
    return env.start(sys.executable, "-u", str(SCRIPT), *script_args, name=name, cwd=env.tmp,
                     env={"CACHEWATCH_CONFIG": str(env.tmp / "cachewatch.toml")})


def command_events(entry: EngineEntry) -> list[tuple[str, dict[str, Any]]]:
    with EngineClient(entry.socket, client_name="test") as c:
        return [(e.get("command"), dict(e.get("args") or {})) for e in c.events(kinds=["command"])]


def engine_snapshot(entry: EngineEntry):  # noqa: ANN201
    with EngineClient(entry.socket, client_name="test") as c:
        return c.snapshot()


async def until(pilot, predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def screen_text(app: CachewatchApp) -> str:
    import io

    from rich.console import Console

    w, h = app.size
    console = Console(width=w, height=h, file=io.StringIO(), force_terminal=True, record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def running(app: CachewatchApp) -> bool:
    s = app.snapshot
    return bool(s and s.training and s.training.state.value == "running" and s.progress is not None)


def new_app(entry: EngineEntry, **kw: Any) -> CachewatchApp:
    return CachewatchApp(EngineSource(entry), refresh_s=0.2, **kw)


def test_pause_and_resume(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-pause")

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: running(app), "the training to run")
            pid = app.snapshot.training.pid
            await pilot.press("p")
            await until(pilot, lambda: app.snapshot.training.state.value == "paused", "paused on screen")
            assert proc_state(pid) == "T"  # the process group really is stopped
            await until(pilot, lambda: "paused" in screen_text(app), "paused on screen")
            await pilot.press("p")
            await until(pilot, lambda: app.snapshot.training.state.value == "running", "running again")
            assert proc_state(pid) != "T"
        assert [c for c, _ in command_events(entry)] == ["pause", "resume"]

    asyncio.run(go())


def test_evict_to_a_typed_size(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-evict")

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot and app.snapshot.caches and app.snapshot.caches[0].stats
                        and app.snapshot.caches[0].stats.entries > 20, "the cache to fill")
            await pilot.press("e")
            assert isinstance(app.screen, EvictDialog)
            size_field = app.screen.query_one("#size")
            assert app.screen.focused is size_field  # a size can be typed at once
            # The example is a size of this cache (below what it holds), not a fixed one.
            example = re.search(r"or a size \((\w+(?:\.\w+)?)\)", size_field.placeholder).group(1)
            assert parse_size(example) < app.screen.view.stats.used_bytes
            await pilot.press("enter")  # Enter on the empty field: asks, evicts nothing
            assert isinstance(app.screen, EvictDialog)
            assert "type a size" in str(app.screen.query_one("#error").render())
            await pilot.press("n")
            assert not isinstance(app.screen, EvictDialog)
            await pilot.press("e", *"200KB", "y")  # y submits what was typed
            await until(pilot, lambda: any(e.reason == "manual" for e in app.snapshot.evictions), "a manual eviction")
            await pilot.pause(0.3)
            await until(pilot, lambda: "manual" in screen_text(app), "manual on screen")  # the row in the eviction log
            after = next(e for e in app.snapshot.evictions if e.reason == "manual").size_after
            assert after <= 200_000
        assert command_events(entry) == [("evict", {"to": "200KB"})]

    asyncio.run(go())


def test_restart_asks_first_and_no_is_the_default(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-restart")

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: running(app), "the training to run")
            await pilot.press("r")
            assert isinstance(app.screen, ConfirmationModal)
            assert app.screen.focused.id == "no"
            await pilot.press("enter")  # the focused answer: No
            await pilot.press("r", "y")
            await until(pilot, lambda: app.snapshot.training.restarts == 1 and running(app), "the restart")
            await until(pilot, lambda: "restarts 1" in screen_text(app), "restarts 1 on screen")
        assert [c for c, _ in command_events(entry)] == ["restart"]

    asyncio.run(go())


def test_stop_then_quit_leaves_the_engine(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-stop")

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: running(app), "the training to run")
            await pilot.press("S")
            assert isinstance(app.screen, ConfirmationModal) and app.screen.focused.id == "no"
            await pilot.press("y")
            await until(pilot, lambda: app.snapshot.training.state.value == "stopped", "stopped")
            await pilot.pause(0.3)
            await until(pilot, lambda: "stopped on request" in screen_text(app), "stopped on request on screen")
            # Starting the ended training again is not destructive in the command table: no question.
            await pilot.press("r")
            assert not isinstance(app.screen, ConfirmationModal)
            await until(pilot, lambda: running(app), "the training started again")
            await pilot.press("q")
        assert command_events(entry) == [("stop", {"what": "training"}), ("start", {})]
        assert engine_snapshot(entry).engine.pid == entry.pid  # the engine is still there

    asyncio.run(go())


def test_quit_detaches_and_the_training_goes_on(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-quit")

    async def go() -> int:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: running(app), "the training to run")
            step = app.snapshot.progress.step
            await pilot.press("q")
        assert app.return_code == 0
        return step

    asyncio.run(go())
    time.sleep(0.5)
    snap = engine_snapshot(entry)
    assert snap.training.state.value == "running" and snap.training.restarts == 0
    assert proc_state(snap.training.pid) in ("R", "S")
    assert command_events(entry) == []


def test_oom_alert_shows_and_is_dismissed(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-alert", "--oom-after", "3")

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: any(a.kind == "cuda_oom" for a in app.snapshot.alerts) if app.snapshot else False,
                        "the OOM alert")
            banner = app.query_one("#alerts")
            assert banner.display and any(a.kind == "cuda_oom" for a in banner.alerts)
            await until(pilot, lambda: "CUDA out of memory" in screen_text(app), "CUDA out of memory on screen")
            await pilot.press("a")
            assert isinstance(app.screen, AlertDetailsScreen)
            assert any("expandable_segments" in r for r in app.screen.alert.remedies)
            await pilot.press("d")
            await until(pilot, lambda: all(a.dismissed for a in app.snapshot.alerts if a.kind == "cuda_oom"),
                        "the dismissal")
            await pilot.pause(0.3)
            # The band is gone (the training's own output may still show the traceback).
            assert not any(a.kind == "cuda_oom" for a in banner.alerts) and not banner.display
        assert [c for c, _ in command_events(entry)] == ["dismiss_alert"]

    asyncio.run(go())


def test_verify_shows_its_result(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-verify")

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: running(app), "the training to run")
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, JobResultScreen), "the verify result", timeout=60)
            await until(pilot, lambda: "Verify result" in screen_text(app), "the result screen drawn")
            assert app.screen.job.kind == "verify" and app.screen.job.state == "done"
            await pilot.press("q")
            assert not isinstance(app.screen, JobResultScreen)
        assert [c for c, _ in command_events(entry)] == ["verify"]

    asyncio.run(go())


def test_push_then_pull_from_the_keys_show_their_results(engine_env: EngineEnv) -> None:
    """P pushes the cache to [cache] remote, U pulls from it, each as an engine job with its result screen."""
    remote = engine_env.tmp / "remote"
    (engine_env.tmp / "cachewatch.toml").write_text(
        f'[cache]\nroot = "cache"\nmax_size = "1MB"\nremote = "{remote}"\n\n[run]\nstop_grace = "3s"\n'
    )
    entry = engine_env.start(sys.executable, "-u", str(SCRIPT), "--epochs", "1", "--steps", "10", name="keys-sync",
                             cwd=engine_env.tmp, env={"CACHEWATCH_CONFIG": str(engine_env.tmp / "cachewatch.toml")})

    async def job_from_key(pilot, app: CachewatchApp, key: str, kind: str) -> None:  # noqa: ANN001
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, JobResultScreen), f"the {kind} result", timeout=60)
        assert app.screen.job.kind == kind and app.screen.job.state == "done", app.screen.job
        await pilot.press("q")

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None and app.snapshot.training is not None
                        and app.snapshot.training.state.over, "the training to write its items and end")
            await job_from_key(pilot, app, "P", "push")
            assert list((remote / "manifests").iterdir())  # the push committed a manifest
            await job_from_key(pilot, app, "U", "pull")
        assert [c for c, _ in command_events(entry)] == ["push", "pull"]

    asyncio.run(go())


def test_log_help_and_readonly(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-misc")

    async def go() -> None:
        app = new_app(entry, readonly=True)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: running(app), "the training to run")
            await until(pilot, lambda: app.query_one("#log").line_count > 3, "training output in the log")
            assert "Epoch 1/1000" in "\n".join(app.query_one("#log").lines)
            await pilot.press("h")
            assert app.focused is app.query_one(EvictionLog)
            await pilot.press("l")
            assert app.focused is app.query_one("#log")
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            keys = {k for k, _, _ in app.screen.key_rows}
            assert "v" in keys and not ({"e", "s", "p", "r", "S"} & keys)
            await pilot.press("q")
            for key in ("e", "s", "p", "r", "S", "d"):  # removed under --readonly: nothing opens, nothing is sent
                await pilot.press(key)
                assert app.screen is app.screen_stack[0]
            footer = screen_text(app).splitlines()[-1]
            assert "Verify" in footer and "Evict" not in footer and "Stop" not in footer
        assert command_events(entry) == []
        assert engine_snapshot(entry).training.state.value == "running"

    asyncio.run(go())


def test_split_from_the_dialog_then_cancel_a_running_job(engine_env: EngineEnv) -> None:
    entry = start_engine(engine_env, "keys-split")
    small, big = engine_env.tmp / "batches", engine_env.tmp / "big"
    small.mkdir()
    big.mkdir()
    with open(small / "traces.pkl", "wb") as fh:
        pickle.dump([{"trace": i} for i in range(40)], fh)
    with gzip.open(big / "huge.pkl.gz", "wb", compresslevel=1) as fh:  # seconds of work to split: time to cancel
        pickle.dump([os.urandom(250_000) for _ in range(400)], fh)
    out_small, out_big = engine_env.tmp / "split", engine_env.tmp / "split_big"

    async def fill(pilot, app: CachewatchApp, source: Path, output: Path, delete: bool) -> None:  # noqa: ANN001
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SplitDialog), "the split dialog")
        app.screen.query_one("#input").value = str(source)
        app.screen.query_one("#output").value = str(output)
        app.screen.query_one("#traces").value = "10"
        app.screen.query_one("#delete").value = delete
        await pilot.press("ctrl+s")

    async def split(pilot, app: CachewatchApp, source: Path, output: Path, *, delete: bool) -> None:  # noqa: ANN001
        await fill(pilot, app, source, output, delete)
        if delete:  # deleting the originals is destructive in the command table: it asks, No focused
            await until(pilot, lambda: isinstance(app.screen, ConfirmationModal), "the confirmation")
            assert app.screen.focused.id == "no" and "DELETED" in screen_text(app)
            await pilot.press("n")  # no: nothing is sent
            assert not isinstance(app.screen, (ConfirmationModal, SplitDialog))
            await fill(pilot, app, source, output, delete)
            await until(pilot, lambda: isinstance(app.screen, ConfirmationModal), "the confirmation")
            await pilot.press("y")
        else:  # a split that keeps its originals is not destructive: it starts without a question
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ConfirmationModal)

    async def go() -> None:
        app = new_app(entry)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: running(app), "the training to run")
            await split(pilot, app, small, out_small, delete=True)
            await until(pilot, lambda: isinstance(app.screen, JobResultScreen), "the split result", timeout=60)
            assert app.screen.job.kind == "split" and app.screen.job.state == "done"
            await pilot.press("q")
            await split(pilot, app, big, out_big, delete=False)
            await until(pilot, lambda: any(j.kind == "split" and j.state == "running" for j in app.snapshot.jobs),
                        "the second split to run")
            await pilot.press("c")
            await until(pilot, lambda: any(j.state == "cancelled" for j in app.snapshot.jobs), "the cancellation",
                        timeout=60)

    asyncio.run(go())
    assert sorted(os.listdir(out_small)) == [f"traces_sub{i:04d}.pkl.gz" for i in range(4)]
    assert not (small / "traces.pkl").exists()  # the confirmed delete_original happened
    leftovers = sorted(os.listdir(out_big)) if out_big.exists() else []
    assert leftovers == [], f"a cancelled split left {leftovers}"
    assert (big / "huge.pkl.gz").stat().st_size > 0
    events = command_events(entry)
    assert [c for c, _ in events] == ["split", "split", "cancel_job"]
    assert events[0][1].get("delete_original") is True and "delete_original" not in events[1][1]
