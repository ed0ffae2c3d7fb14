"""One "node" cut off from Redis (its TCP path blackholed, later refused) in the middle of a run: its puts fail
clearly, naming its URL, the other nodes keep writing, and the one bound holds for all of them."""

from __future__ import annotations

import time
from pathlib import Path

from cachewatch.engine import Cache

from ..workers import FrozenSampler, value_ok
from .nodes import Fleet, assert_bound_held, assert_index_matches_files, wait_until

KiB, MiB = 1024, 1024 * 1024
LEASE_S = 2.0
HANG_S = 10.0  # a hang detector, not a speed target: each Redis call is bounded by timeout_s (2 s)


def test_a_node_cut_off_fails_clearly_and_the_others_keep_the_bound(redis_server, proxy_to, shared_root: Path, tmp_path: Path) -> None:
    max_b = 16 * MiB
    proxies = {node: proxy_to() for node in ("n1", "n2", "n3")}  # each node's own network path
    ctl = Cache(shared_root, max_size=max_b, index=redis_server.url, node="ctl", lease_s=LEASE_S)
    block = ctl.stats().block_bytes
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(shared_root, logs, tmp_path / "stop")
    for node, proxy in proxies.items():
        for seed in range(2):
            fleet.start_writer(node, proxy.url, 10 * int(node[1:]) + seed, min_size=16 * KiB, max_size=128 * KiB,
                               keys=600, lease_s=LEASE_S)
    sampler = FrozenSampler(shared_root, fleet.pids(), block, max_b, interval_s=0.005).start()
    cut = proxies["n3"]
    cut_logs = [lg for lg in fleet.logs if lg.node == "n3"]
    other_logs = [lg for lg in fleet.logs if lg.node != "n3"]
    try:
        fleet.wait_opened()  # every writer is in before the outage (spawning is slow on a loaded machine)
        wait_until(lambda: fleet.ok_bytes() >= 1.5 * max_b and all(lg.events("ok") for lg in fleet.logs), 90,
              "the writers to fill the cache")
        # a reader of the node that will be cut off (a short timeout_s keeps this test short)
        reader = Cache(shared_root, index=cut.url, node="n3", lease_s=LEASE_S, timeout_s=0.5)
        t_cut = time.time()
        cut.cut("blackhole")  # packets dropped: no reset, no refusal, as a dead switch does
        # Its reads of entries on disk still work (the other nodes keep evicting, so each read
        # takes the newest entry, listed through a path that is not cut).
        checked = 0
        for _ in range(30):
            e = ctl.entries()[-1]
            data = reader.read(e.key)
            if data is None:  # only a file that is gone meanwhile may be a miss
                assert not Path(e.path).exists(), f"read({e.key!r}) on the cut-off node missed {e.path}, on disk"
                continue
            assert value_ok(data), f"read({e.key!r}) on the cut-off node: not a whole value"
            checked += 1
            if checked == 5:
                break
        assert checked == 5, f"only {checked} reads could be checked"

        wait_until(lambda: all(lg.load().events("unavailable", after=t_cut) for lg in cut_logs), 30,
              "the cut-off node's writers to get CacheIndexUnavailable")
        # the others write on, through the whole time the node is cut off (past its leases)
        time.sleep(2 * LEASE_S)
        t_restore = time.time()
        for lg in other_logs:
            n_ok = len([x for x in lg.load().events("ok", after=t_cut) if x["t"] < t_restore])
            assert n_ok > 0, f"{lg.path.name} stopped writing while another node was cut off"
        cut.restore()
        wait_until(lambda: all(lg.load().events("ok", after=t_restore) for lg in cut_logs), 60,
              "the cut-off node to write again after the restore")
        # the other kind of partition: connections reset and refused (a rejecting firewall)
        t_cut2 = time.time()
        cut.cut("refuse")
        wait_until(lambda: all(lg.load().events("unavailable", after=t_cut2) for lg in cut_logs), 30,
              "the refused node's writers to get CacheIndexUnavailable")
        t_restore2 = time.time()
        cut.restore()
        wait_until(lambda: all(lg.load().events("ok", after=t_restore2) for lg in cut_logs), 60,
              "the refused node to write again after the restore")
        fleet.stop_and_join(60)
        reader.close()
    finally:
        sampler.stop()
        fleet.kill_all()

    assert_bound_held(sampler, max_b)
    assert sampler.samples > 20
    for lg in fleet.logs:
        assert lg.bad() == [], f"{lg.path.name}: {lg.bad()[:3]}"
        slow = [x for x in lg.lines if (x.get("dur_s") or 0) > HANG_S]
        assert slow == [], f"{lg.path.name}: calls hung: {slow[:3]}"
    for lg in cut_logs:
        down = lg.events("unavailable")
        assert all(f"127.0.0.1:{cut.port}" in x["msg"] for x in down), f"the error must name the node's URL {cut.url}: {down[:1]}"
        # a put in flight at the cut may instead lose its lease; it must still say where it was cut off
        others = [x for x in lg.events("error") if f"127.0.0.1:{cut.port}" not in x["msg"]]
        assert others == [], f"{lg.path.name}: unclear errors while cut off: {others[:2]}"
        blind = [x for x in lg.events("ok") if (t_cut + 0.5 < x["t"] - x["dur_s"] and x["t"] < t_restore)
                 or (t_cut2 + 0.5 < x["t"] - x["dur_s"] and x["t"] < t_restore2)]
        assert blind == [], f"{lg.path.name}: puts stored while cut off: {blind[:3]}"
    for lg in other_logs:
        assert not lg.events("unavailable"), f"{lg.path.name} (not cut off) got: {lg.events('unavailable')[:1]}"
    assert assert_index_matches_files(shared_root, ctl, settle_s=40) > 0
    ctl.close()
