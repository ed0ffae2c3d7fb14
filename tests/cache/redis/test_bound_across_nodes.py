"""One bound across "machines": processes of three node ids write one shared root through one
real Redis; a sampler that freezes every writer checks the bytes on disk at exact instants."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from cachewatch.engine import Cache
from cachewatch.engine.cache.redis_cache import RedisCache

from ..workers import FrozenSampler, make_value
from .nodes import Fleet, assert_bound_held, assert_index_matches_files

KiB, MiB = 1024, 1024 * 1024
LEASE_S = 2.0  # short, but renewals every ~0.7 s survive the scheduling hiccups of 2 busy cores


def _fleet(root: Path, tmp_path: Path) -> Fleet:
    logs = tmp_path / "logs"
    logs.mkdir()
    return Fleet(root, logs, tmp_path / "stop")


def test_three_nodes_of_four_processes_keep_one_bound(redis_server, shared_root: Path, tmp_path: Path) -> None:
    max_b = 8 * MiB
    factor = 8  # bytes written in all, as a multiple of max
    # target = max: eviction waits until the very edge, so any accounting slip shows on disk
    ctl = Cache(shared_root, max_size=max_b, target_ratio=1.0, index=redis_server.url, node="ctl", lease_s=LEASE_S)
    assert isinstance(ctl, RedisCache)
    block = ctl.stats().block_bytes
    fleet = _fleet(shared_root, tmp_path)
    n = 0
    for node in ("n1", "n2", "n3"):
        for _ in range(4):
            fleet.start_writer(node, redis_server.url, n, min_size=4 * KiB, max_size=64 * KiB, keys=1000,
                               budget_bytes=factor * max_b // 12, lease_s=LEASE_S)
            n += 1
    sampler = FrozenSampler(shared_root, fleet.pids(), block, max_b, interval_s=0.005).start()
    try:
        fleet.join(180)
    finally:
        sampler.stop()
        fleet.kill_all()

    for lg in fleet.logs:
        assert lg.bad() == [], f"{lg.path.name}: {lg.bad()[:3]}"
        assert lg.events("done"), f"{lg.path.name} did not finish: {lg.lines[-3:]}"
        refused = lg.events("unavailable", "error")
        assert refused == [], f"{lg.path.name}: puts refused with Redis up and no stall: {refused[:3]}"
    written = sum(x["size"] for lg in fleet.logs for x in lg.events("ok"))
    assert written >= 6 * max_b, f"only {written / max_b:.1f}x max written: the workload must overflow many times"
    by_node = {lg.node for lg in fleet.logs if lg.events("ok")}
    assert by_node == {"n1", "n2", "n3"}

    assert sampler.samples > 20, f"only {sampler.samples} frozen samples"
    assert_bound_held(sampler, max_b)
    assert sampler.peak > 0.8 * max_b, f"peak {sampler.peak / max_b:.2f} of max: the writers should fill the cache"
    stats = ctl.stats()
    assert stats.evicted_files > 0
    assert stats.max_bytes == max_b
    assert {"n1", "n2", "n3"} <= set(stats.nodes), f"the index must know every node that wrote: {stats.nodes}"
    assert assert_index_matches_files(shared_root, ctl) > 0
    ctl.close()


def test_writers_killed_mid_put_leave_nothing_uncounted(redis_server, shared_root: Path, tmp_path: Path) -> None:
    max_b = 8 * MiB
    ctl = Cache(shared_root, max_size=max_b, index=redis_server.url, node="ctl", lease_s=LEASE_S)
    block = ctl.stats().block_bytes
    fleet = _fleet(shared_root, tmp_path)
    seeds = iter(range(1000))
    nodes = {}
    for node in ("n1", "n2"):
        for _ in range(3):
            p = fleet.start_writer(node, redis_server.url, next(seeds), min_size=16 * KiB, max_size=256 * KiB, keys=400,
                                   lease_s=LEASE_S)
            nodes[p.pid] = node
    fleet.wait_opened()
    sampler = FrozenSampler(shared_root, fleet.pids(), block, max_b, interval_s=0.005).start()
    rng = random.Random(7)
    killed = []
    try:
        for _ in range(6):
            time.sleep(0.7)
            victim = rng.choice([p for p in fleet.procs if p.is_alive()])
            os.kill(victim.pid, signal.SIGKILL)  # wherever it is: most of a writer's time is inside put()
            victim.join(10)
            killed.append(victim.pid)
            with sampler.between_samples():  # frozen from the next sample on (never moving during one)
                p = fleet.start_writer(nodes[victim.pid], redis_server.url, next(seeds), min_size=16 * KiB,
                                       max_size=256 * KiB, keys=400, lease_s=LEASE_S)
                sampler.pids.append(p.pid)
            nodes[p.pid] = nodes[victim.pid]
        t_last_kill = time.time()
        # the survivors keep writing past the dead writers' leases (they expire after LEASE_S)
        time.sleep(LEASE_S * 1.5)
        fleet.stop_and_join(60)
    finally:
        sampler.stop()
        fleet.kill_all()

    assert_bound_held(sampler, max_b)
    assert sampler.samples > 20
    survivors = [lg for p, lg in zip(fleet.procs, fleet.logs) if p.pid not in killed]
    for lg in fleet.logs:
        assert lg.bad() == [], f"{lg.path.name}: {lg.bad()[:3]}"
    assert sum(len(lg.events("ok", after=t_last_kill)) for lg in survivors) > 0, "writers stopped after the kills"
    ctl.close()

    # A fresh process's view: reopened from the marker alone, then reconciled once the dead
    # writers' leases have expired: every byte on disk is an indexed, whole entry.
    reopened = Cache(shared_root)
    assert isinstance(reopened, RedisCache), "Cache(root) on a Redis-indexed root must reopen it with Redis"
    assert reopened.max_bytes == max_b
    # (40 s is only a ceiling: a killed evictor's or committer's doomed files are claimed for a lease)
    assert assert_index_matches_files(shared_root, reopened, settle_s=40) > 0
    reopened.close()


def test_a_writer_killed_while_evicting_holds_the_others_up_no_longer_than_a_lease(redis_server, shared_root: Path, tmp_path: Path) -> None:
    """The evictor's lock and its victims' claims are leases too: a writer killed -9 in the middle
    of an eviction (victims out of the index, files not yet unlinked) must not stop the other
    writers from making room for longer than about a lease, and its victims' files are removed."""
    from cachewatch.engine.errors import CacheBusy

    from ..workers import _state
    from .nodes import SPAWN, WorkerLog, evictor_stopped_in_unlink

    max_b = 8 * MiB
    url = redis_server.url
    ctl = Cache(shared_root, max_size=max_b, index=url, node="ctl", lease_s=LEASE_S)
    rng = random.Random(3)
    for i in range(30):  # 7.5 MiB: above the target, so the next put evicts first
        ctl.put(f"pre{i}", make_value(rng, 256 * KiB, 256 * KiB))
    marker = tmp_path / "in-eviction"
    log = WorkerLog(tmp_path / "evictor.jsonl", "nE")
    p = SPAWN.Process(target=evictor_stopped_in_unlink,
                      args=(str(shared_root), {"index": url, "node": "nE", "lease_s": LEASE_S}, "big", 1 * MiB, str(marker),
                            str(log.path)), daemon=True)
    p.start()
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and _state(p.pid) in ("T", "t")):
            assert p.is_alive(), f"the evicting writer exited early: {log.load().lines}"
            assert time.monotonic() < deadline, "the writer never stopped inside its eviction"
            time.sleep(0.01)
        victim = Path(marker.read_text())
        assert victim.exists(), "stopped before unlinking its first victim"
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    finally:
        if p.is_alive():
            p.kill()
    # Another node's writer needs room now. Its wait_timeout (3 leases) is the claim under test:
    # the dead evictor's lock must lapse after about a lease, not hold it past the timeout.
    other = Cache(shared_root, index=url, node="n2", lease_s=LEASE_S, wait_timeout=3 * LEASE_S)
    try:
        for i in range(8):
            other.put(f"after{i}", make_value(rng, 512 * KiB, 512 * KiB))
    except CacheBusy as exc:
        raise AssertionError(f"a dead evictor held the others up for {3 * LEASE_S:g}s: {exc}") from None
    other.close()
    assert assert_index_matches_files(shared_root, ctl, settle_s=40) > 0
    assert not victim.exists() or victim.name in {e.path.name for e in ctl.entries()}
    ctl.close()
