"""Redis stopped in the middle of a run: puts fail clearly and fast, reads of what is on disk go
on, nothing goes over the bound; Redis restarted from its AOF serves again; an index lost
altogether (FLUSHALL) is rebuilt from the files by ``cachewatch verify --repair``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache
from cachewatch.engine.errors import CacheIndexUnavailable
from tests.support.helpers import run_cli

from ..workers import FrozenSampler, value_ok
from .nodes import Fleet, assert_bound_held, assert_index_matches_files, wait_until, entry_files

KiB, MiB = 1024, 1024 * 1024
LEASE_S = 2.0
# Not a speed target: a put against a dead server must come back with an error rather than
# hang. The cache bounds each Redis call (timeout_s, 2 s by default); 10 s leaves room for a
# loaded machine and still tells "fails" from "hangs".
HANG_S = 10.0


def test_redis_stopped_mid_run_then_restarted_then_flushed(redis_server, shared_root: Path, tmp_path: Path) -> None:
    max_b = 16 * MiB
    url = redis_server.url
    where = f"127.0.0.1:{redis_server.port}"
    ctl = Cache(shared_root, max_size=max_b, index=url, node="ctl", lease_s=LEASE_S)
    block = ctl.stats().block_bytes
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(shared_root, logs, tmp_path / "stop")
    for node in ("n1", "n2"):
        for seed in range(2):
            fleet.start_writer(node, url, 10 * int(node[1:]) + seed, min_size=16 * KiB, max_size=128 * KiB, keys=600,
                               lease_s=LEASE_S)
    sampler = FrozenSampler(shared_root, fleet.pids(), block, max_b, interval_s=0.005).start()
    try:
        fleet.wait_opened()  # every writer is in before the outage (spawning is slow on a loaded machine)
        wait_until(lambda: fleet.ok_bytes() >= 1.5 * max_b and all(lg.events("ok") for lg in fleet.logs), 90,
              "the writers to fill the cache")
        before = [e for e in ctl.entries()]
        t_down = time.time()
        redis_server.stop()  # SIGTERM, mid-run

        # Every writer's puts now fail with CacheIndexUnavailable naming the URL, none hangs.
        def all_refused() -> bool:
            return all(lg.load().events("unavailable", after=t_down) for lg in fleet.logs)

        wait_until(all_refused, 30, "every writer to get CacheIndexUnavailable")
        with pytest.raises(CacheIndexUnavailable, match=where.replace(".", r"\.")):
            ctl.put("while-down", b"x" * 1000)

        # Reads of entries already on disk still work (the index is not needed to find a file).
        checked = 0
        for e in before:
            if Path(e.path).exists():
                got = ctl.get(e.key)
                assert got is not None, f"get({e.key!r}) returned None while its file {e.path} is on disk"
                data = ctl.read(e.key)
                assert data is not None and value_ok(data), f"read({e.key!r}) while Redis is down: not a whole value"
                checked += 1
        assert checked >= 5, f"only {checked} entries left on disk to read back"
        time.sleep(1.0)  # the writers keep trying for a while against the dead server
        t_up = time.time()
        redis_server.start()  # same port, same directory: the AOF brings the index back

        def all_writing_again() -> bool:
            return all(lg.load().events("ok", after=t_up) for lg in fleet.logs)

        wait_until(all_writing_again, 60, "every writer to put again after the restart")
        fleet.stop_and_join(60)
    finally:
        sampler.stop()
        fleet.kill_all()

    assert_bound_held(sampler, max_b)
    for lg in fleet.logs:
        assert lg.bad() == [], f"{lg.path.name}: {lg.bad()[:3]}"
        down = lg.events("unavailable")
        assert down and all(where in x["msg"] for x in down), f"{lg.path.name}: the error must name {url}: {down[:1]}"
        slow = [x for x in lg.lines if (x.get("dur_s") or 0) > HANG_S and x["t"] > t_down]
        assert slow == [], f"{lg.path.name}: calls hung against the stopped server: {slow[:3]}"
        # no put that started after the stop and before the restart can have been stored
        blind = [x for x in lg.events("ok") if t_down + 0.5 < x["t"] - x["dur_s"] and x["t"] < t_up]
        assert blind == [], f"{lg.path.name}: puts stored while Redis was down: {blind[:3]}"
        assert not lg.events("error", after=t_down), f"{lg.path.name}: other errors: {lg.events('error', after=t_down)[:3]}"

    # After the restart: the index survived (AOF) and agrees with the files.
    assert assert_index_matches_files(shared_root, ctl, settle_s=40) > 0
    ctl.close()

    # A lost index (FLUSHALL, or a new empty Redis): verify --repair rebuilds it from the files.
    n_files = len(entry_files(shared_root))
    assert n_files > 0
    redis_server.client().flushall()
    r = run_cli("verify", str(shared_root), "--repair", "--max-size", str(max_b), "--quiet")
    assert r.returncode == 0, f"verify --repair exited {r.returncode}: {r.stdout}{r.stderr}"
    rebuilt = Cache(shared_root)
    s = rebuilt.stats()
    assert s.max_bytes == max_b
    assert s.entries == n_files, f"{s.entries} entries indexed after repair, {n_files} files on disk"
    assert assert_index_matches_files(shared_root, rebuilt, settle_s=10) == n_files
    rebuilt.put("after-repair", b"y" * 5000)
    assert rebuilt.read("after-repair") == b"y" * 5000
    rebuilt.close()

