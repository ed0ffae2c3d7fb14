"""`cachewatch status` text for states found wrong in a terminal (issue 10, item 11)."""

from __future__ import annotations

import copy

from cachewatch.engine.cli.engine_cmd import format_status
from cachewatch.engine.daemon.snapshot import EngineSnapshot
from tests.tui import snapshots as S


def _snapshot(**changes) -> EngineSnapshot:  # noqa: ANN003
    data = copy.deepcopy(S.snapshot().to_json())
    data.update(changes)
    return EngineSnapshot.from_json(data)


def _row(lines: list[str], key: str) -> list[str]:
    return [line.split(None, 1)[1] for line in lines if line.split(None, 1)[0] == key]


def test_one_process_and_one_worker_are_singular() -> None:
    data = S.snapshot().to_json()
    workers = copy.deepcopy(data["workers"])
    workers["processes"] = workers["processes"][:2]  # the training and one DataLoader worker
    lines = format_status(_snapshot(workers=workers))
    (row,) = _row(lines, "workers")
    assert row.startswith("1 DataLoader worker, 2 processes,"), row
    workers["processes"] = workers["processes"][:1]
    (row,) = _row(format_status(_snapshot(workers=workers)), "workers")
    assert row.startswith("0 DataLoader workers, 1 process,"), row


def test_a_finished_job_shows_its_outcome_not_its_last_phase() -> None:
    # A verify ends in its "orphans" phase with nothing counted there: the status said
    # "verify-1 done 0 items orphans".
    clean = {**S.verify_job(True), "done": 0, "total": 0, "unit": "items", "message": "orphans"}
    bad = {**S.verify_job(False), "id": "verify-2", "message": "orphans"}
    running = {**S.running_job(), "id": "verify-3"}
    lines = format_status(_snapshot(jobs=[clean, bad, running]))
    assert _row(lines, "job") == [
        "verify-1 done: the cache is clean",
        "verify-2 done: 3 problems (cachewatch verify --repair)",
        "verify-3 running hashing: 52000/131402 entries",
    ]
