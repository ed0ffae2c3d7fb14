"""What is on screen follows the engine: a changed figure shows on the next poll, wherever it is.

Fixed snapshots (``FixedSource``) are swapped between polls, so exactly one value changes
and the screen is compared before and after. The screen is read from Textual's compositor,
which keeps every row that was not marked dirty: a row the dashboard forgot to repaint
shows its old text here, as it did in the terminal.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from dataclasses import replace

from cachewatch.engine.daemon.snapshot import EngineSnapshot
from cachewatch.tui import format as fmt
from cachewatch.tui.app import CachewatchApp

from . import snapshots as S
from .fakes import FixedSource
from .test_keys_engine import screen_text, until

GB = S.GB


def with_host_memory(snap: EngineSnapshot, used_bytes: int, seq: int) -> EngineSnapshot:
    data = copy.deepcopy(snap.to_json())
    mem = data["host"]["memory"]
    mem["used_bytes"], mem["available_bytes"] = used_bytes, mem["total_bytes"] - used_bytes
    data["seq"] = seq
    return EngineSnapshot.from_json(data)


def test_host_line_follows_under_a_wrapped_no_gpu_reason() -> None:
    # At 120x40 the "no GPU (reason)" text wraps over two rows of the GPU panel; the RAM line
    # is under it. Only the RAM figure changes between the two snapshots.
    first = S.snapshot(gpu=False)
    source = FixedSource(first)
    app = CachewatchApp(source, refresh_s=0.1)

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            gpu = app.query_one("#gpu")
            await until(pilot, lambda: gpu.content_size.width < len("no GPU (NVML found no NVIDIA GPU on this machine)"),
                        "the wide layout, where the reason wraps")
            await until(pilot, lambda: f"RAM {fmt.gib(23 * GB)}" in screen_text(app), "the first RAM figure")
            for i, used in enumerate((25 * GB, 27 * GB, 22 * GB)):
                source.snapshot = with_host_memory(first, used, seq=first.seq + 1 + i)
                figure = f"RAM {fmt.gib(used)}"
                await until(pilot, lambda: app.snapshot.seq == source.snapshot.seq, "the new snapshot")
                await pilot.pause(0.2)
                await until(pilot, lambda: figure in screen_text(app), f"{figure} on screen", timeout=5)
                assert "no GPU" in screen_text(app)  # the wrapped text above it is intact

    asyncio.run(go())


def test_no_cache_hint_shows_whole_at_120_columns() -> None:
    # "waiting for the engine…" (one row) becomes the hint (two rows at this width): the
    # second row must be painted too, not only the row that held the old text.
    snap = dataclasses.replace(S.snapshot(gpu=False), caches=(), evictions=())
    source = FixedSource(snap)
    source.snapshot = None  # the engine is still starting
    app = CachewatchApp(source, refresh_s=0.1)

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: "waiting for the engine" in screen_text(app), "the waiting line")
            source.snapshot = snap
            await until(pilot, lambda: "no cache configured" in screen_text(app), "the hint")
            await pilot.pause(0.3)
            cache_rows = [row.split("││")[0] for row in screen_text(app).splitlines()[2:6]]
            assert "max_size in cachewatch.toml" in " ".join(cache_rows), "\n".join(cache_rows)

    asyncio.run(go())


class StreamingSource(FixedSource):
    """A training that keeps printing: each poll brings the lines queued since the last one."""

    def __init__(self, snapshot: EngineSnapshot) -> None:
        super().__init__(snapshot, log_lines=())
        self.queued: list[str] = []
        self.printed = 0

    def print_lines(self, n: int, text: str = "line") -> str:
        for _ in range(n):
            self.printed += 1
            self.queued.append(f"{text} {self.printed}")
        return self.queued[-1]

    def poll(self):  # noqa: ANN201
        update = super().poll()
        lines, self.queued = tuple(self.queued), []
        return replace(update, log_lines=lines)


def shows(app: CachewatchApp, line: str) -> bool:
    return any(row.rstrip(" │").endswith(f" {line}") for row in screen_text(app).splitlines())


def test_output_keeps_following_after_resizes_and_a_restart() -> None:
    source = StreamingSource(S.snapshot())
    app = CachewatchApp(source, refresh_s=0.1)

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            log = app.query_one("#log")
            last = source.print_lines(60)
            await until(pilot, lambda: shows(app, last), "the newest line")
            for size in ((80, 24), (120, 40), (80, 24)):  # the panel gets shorter, taller, shorter
                await pilot.resize_terminal(*size)
                await pilot.pause(0.2)
                last = source.print_lines(30)
                await until(pilot, lambda: shows(app, last), f"the newest line at {size}", timeout=5)
            # The training restarts: the engine appends its output after a marker line.
            source.print_lines(1, "[cachewatch: training restarted]")
            last = source.print_lines(40, "second run")
            await until(pilot, lambda: shows(app, last), "the restarted run's newest line", timeout=5)
            assert log.is_vertical_scroll_end

    asyncio.run(go())


def test_reading_back_holds_the_view_and_end_follows_again() -> None:
    source = StreamingSource(S.snapshot())
    app = CachewatchApp(source, refresh_s=0.1)

    async def go() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            log = app.query_one("#log")
            last = source.print_lines(100)
            await until(pilot, lambda: shows(app, last), "the newest line")
            await pilot.press("l", "pageup")  # the reader scrolls back
            await pilot.pause(0.2)
            held = log.scroll_y
            source.print_lines(20)
            await until(pilot, lambda: log.line_count == 120, "more lines")
            await pilot.pause(0.2)
            assert log.scroll_y == held and not log.is_vertical_scroll_end  # the view stays where it was read
            await pilot.press("end")
            for _ in range(3):  # lines keep arriving while End scrolls, and after
                last = source.print_lines(20)
                await pilot.pause(0.3)
            await until(pilot, lambda: shows(app, last), "the newest line after End", timeout=5)
            last = source.print_lines(20)
            await until(pilot, lambda: shows(app, last), "still following", timeout=5)

    asyncio.run(go())


def evictions_from(t0: float, n: int, reason: str = "target", every_s: float = 0.08) -> list[dict]:
    """``n`` evictions of 9 files, as the demo's cache makes them, the newest first."""
    out = [{"time": t0 + i * every_s, "cache": "/demo/cache", "reason": reason, "files": 9, "bytes": 147_456,
            "size_before": 7_192_576, "size_after": 7_045_120, "dry_run": False} for i in range(n)]
    return out[::-1]


def with_evictions(snap: EngineSnapshot, evictions: list[dict], seq: int) -> EngineSnapshot:
    data = copy.deepcopy(snap.to_json())
    data["evictions"], data["seq"] = evictions, seq
    return EngineSnapshot.from_json(data)


def eviction_rows(app: CachewatchApp) -> list[str]:
    import re

    return [row for row in screen_text(app).splitlines() if re.search(r"│\d\d:\d\d:\d\d +\d+ ", row)]


def test_a_manual_eviction_stays_in_view_under_a_flood_of_small_ones() -> None:
    base = S.snapshot()
    t = S.T0 - 600
    flood = evictions_from(t, 50)  # 4 s of the demo's evictions: what the engine keeps (50)
    source = FixedSource(with_evictions(base, flood, seq=10))
    app = CachewatchApp(source, refresh_s=0.1)

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: eviction_rows(app), "the eviction rows")
            rows = eviction_rows(app)
            assert len(rows) == 1 and "450" in rows[0] and "target ×50 since" in rows[0], rows
            manual = {"time": t + 4.1, "cache": "/demo/cache", "reason": "manual", "files": 120, "bytes": 1_966_080,
                      "size_before": 7_100_000, "size_after": 5_000_000, "dry_run": False}
            source.snapshot = with_evictions(base, [manual, *flood[:49]], seq=11)
            await until(pilot, lambda: len(eviction_rows(app)) == 2, "the manual row")
            # The flood goes on; the engine's 50 no longer include the manual eviction.
            for i, start in enumerate((t + 4.2, t + 8.2, t + 12.2)):
                source.snapshot = with_evictions(base, evictions_from(start, 50), seq=12 + i)
                await until(pilot, lambda: app.snapshot.seq == 12 + i, "the next snapshot")
            await pilot.pause(0.3)
            rows = eviction_rows(app)
            assert len(rows) == 3, rows  # the new run, the manual eviction, the run before it
            assert "manual" in rows[1] and "120" in rows[1]
            assert "target ×150 since" in rows[0] and "1350" in rows[0]

    asyncio.run(go())


def test_sparse_evictions_are_not_folded() -> None:
    # Seed 000's evictions, 23 minutes apart, stay one row each (the main-screen snapshots too).
    app = CachewatchApp(FixedSource(S.snapshot()), refresh_s=0.1)

    async def go() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: len(eviction_rows(app)) == 9, "nine rows")
            assert not any("×" in row for row in eviction_rows(app))

    asyncio.run(go())
