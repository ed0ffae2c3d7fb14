"""A fresh shared cache: writers of several nodes that put into the same new shard directory
at the same instant all succeed (the directory is made by whichever put comes first)."""

from __future__ import annotations

from pathlib import Path

from cachewatch.engine import Cache
from cachewatch.engine.cache.keys import key_to_name

from .nodes import SPAWN, WorkerLog, assert_index_matches_files, shard_racer

N_PROCS = 6
ROUNDS = 120


def _keys_by_shard() -> list[list[str]]:
    """For each round a shard of its own, and one key in it per process."""
    found: dict[str, list[str]] = {}
    i = 0
    while sum(1 for v in found.values() if len(v) >= N_PROCS) < ROUNDS:
        key = f"r{i}"
        found.setdefault(key_to_name(key).split("/")[0], []).append(key)
        i += 1
    shards = [v[:N_PROCS] for v in found.values() if len(v) >= N_PROCS][:ROUNDS]
    return [[shards[r][p] for r in range(ROUNDS)] for p in range(N_PROCS)]


def test_concurrent_first_puts_into_new_shards_all_succeed(redis_server, shared_root: Path, tmp_path: Path) -> None:
    ctl = Cache(shared_root, max_size="64MiB", index=redis_server.url, node="ctl")
    keys = _keys_by_shard()
    barrier = SPAWN.Barrier(N_PROCS)
    logs = [WorkerLog(tmp_path / f"r{p}.jsonl", f"n{p % 3}") for p in range(N_PROCS)]
    procs = [
        SPAWN.Process(target=shard_racer, args=(str(shared_root), {"index": redis_server.url, "node": lg.node},
                                                keys[p], barrier, str(lg.path)), daemon=True)
        for p, lg in enumerate(logs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
    failed = [x for lg in logs for x in lg.load().events("error")]
    assert failed == [], f"{len(failed)} of {N_PROCS * ROUNDS} first puts into new shards failed, e.g. {failed[:2]}"
    assert all(lg.events("done") for lg in logs)
    assert assert_index_matches_files(shared_root, ctl) == N_PROCS * ROUNDS
    ctl.close()
