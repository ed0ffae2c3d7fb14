"""Snapshot tests of the dashboard (pytest-textual-snapshot), driven by fixed engine snapshots.

The engine snapshot is the dashboard's only input; ``FixedSource`` serves fixed ones, so
each screen is deterministic. Sizes: 80x24 (must be usable) and 160x48.
Update after a deliberate change with ``pytest tests/tui --snapshot-update`` and look at
the SVGs under ``tests/tui/__snapshots__/`` before committing them.
"""

from __future__ import annotations

from typing import Any

import pytest

from cachewatch.tui.app import CachewatchApp

from . import snapshots as S
from .fakes import FixedSource

SMALL = (80, 24)
LARGE = (160, 48)


def app_for(readonly: bool = False, **kw: Any) -> CachewatchApp:
    return CachewatchApp(FixedSource(S.snapshot(**kw)), readonly=readonly)


async def settle(pilot) -> None:  # noqa: ANN001
    await pilot.pause(0.2)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "no-gpu"])
def test_main_screen(snap_compare, size: tuple[int, int], gpu: bool) -> None:
    assert snap_compare(app_for(gpu=gpu), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_oom_alert_banner(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(alerts=(S.OOM_ALERT,)), terminal_size=size, run_before=settle)


def test_oom_alert_details(snap_compare) -> None:
    assert snap_compare(app_for(alerts=(S.OOM_ALERT,)), terminal_size=SMALL, press=["a"], run_before=settle)


def test_readonly_has_no_destructive_keys(snap_compare) -> None:
    assert snap_compare(app_for(readonly=True), terminal_size=SMALL, run_before=settle)


def test_help_screen(snap_compare) -> None:
    assert snap_compare(app_for(), terminal_size=(100, 30), press=["question_mark"], run_before=settle)


def test_evict_dialog(snap_compare) -> None:
    async def open_dialog(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        await pilot.press("e")
        for _ in range(50):  # the size field takes the focus once the dialog is mounted
            if getattr(pilot.app.screen.focused, "id", None) == "size":
                break
            await pilot.pause(0.05)
        pilot.app.screen.query_one("#size").cursor_blink = False  # a blinking cursor made the picture flaky
        await pilot.pause(0.1)

    assert snap_compare(app_for(), terminal_size=SMALL, run_before=open_dialog)


def test_stop_confirmation(snap_compare) -> None:
    assert snap_compare(app_for(), terminal_size=SMALL, press=["S"], run_before=settle)


def test_restart_confirmation(snap_compare) -> None:
    assert snap_compare(app_for(), terminal_size=SMALL, press=["r"], run_before=settle)


def test_split_dialog(snap_compare) -> None:
    async def fill(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause(0.1)
        await pilot.press(*"/data/batches")
        await pilot.press("enter")
        await pilot.press(*"/data/batches_split")
        await pilot.pause(0.1)

    assert snap_compare(app_for(), terminal_size=SMALL, run_before=fill)


def _result_app(ok: bool) -> CachewatchApp:
    source = FixedSource(S.snapshot(jobs=(S.verify_job(ok),)))
    app = CachewatchApp(source)
    app._awaited_jobs["verify-1"] = "verify"  # as if this dashboard had started it
    return app


@pytest.mark.parametrize("ok", [True, False], ids=["clean", "problems"])
def test_verify_result(snap_compare, ok: bool) -> None:
    assert snap_compare(_result_app(ok), terminal_size=SMALL, run_before=settle)


def test_job_progress_bar(snap_compare) -> None:
    assert snap_compare(app_for(jobs=(S.running_job(),)), terminal_size=SMALL, run_before=settle)


def test_paused_training(snap_compare) -> None:
    app = app_for(training_state="paused", paused_since=S.T0 - 130)
    assert snap_compare(app, terminal_size=SMALL, run_before=settle)


def test_exited_with_code(snap_compare) -> None:
    app = app_for(training_state="exited", exit_code=1, exit_reason="exited with code 1", ended=S.T0 - 5)
    assert snap_compare(app, terminal_size=SMALL, run_before=settle)
