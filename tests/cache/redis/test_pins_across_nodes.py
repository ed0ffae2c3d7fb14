"""Pins across machines: a pin held by a process of node A is a lease in Redis that node B's
evictions respect, renewed for as long as it is held; a reader killed with -9 leaves a pin that
expires after pin_lease_s, and the entry becomes evictable."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from cachewatch.engine import Cache

from ..workers import make_value
from .nodes import SPAWN, Fleet, WorkerLog, assert_index_matches_files, pin_holder

KiB, MiB = 1024, 1024 * 1024
LEASE_S = 2.0
PIN_LEASE_S = 1.5


def _wait_file(path: Path, proc, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.is_alive(), f"the pinning process exited (code {proc.exitcode}) before pinning"
        assert time.monotonic() < deadline, "the pin was never taken"
        time.sleep(0.01)


def test_a_pin_of_node_a_survives_node_b_pressure_and_a_dead_readers_pin_expires(redis_server, shared_root: Path, tmp_path: Path) -> None:
    max_b = 8 * MiB
    url = redis_server.url
    opts = {"index": url, "node": "nA", "lease_s": LEASE_S, "pin_lease_s": PIN_LEASE_S}
    ctl = Cache(shared_root, max_size=max_b, index=url, node="ctl", lease_s=LEASE_S, pin_lease_s=PIN_LEASE_S)
    rng = random.Random(1)
    held_value = make_value(rng, 512 * KiB, 512 * KiB)
    ctl.put("held", held_value)
    ctl.put("dead-reader", make_value(rng, 512 * KiB, 512 * KiB))

    holder_log = WorkerLog(tmp_path / "holder.jsonl", "nA")
    holder = SPAWN.Process(target=pin_holder, args=(str(shared_root), opts, "held", str(tmp_path / "held.pinned"),
                                                    str(tmp_path / "release"), str(holder_log.path)), daemon=True)
    doomed_reader = SPAWN.Process(target=pin_holder, args=(str(shared_root), opts, "dead-reader", str(tmp_path / "dead.pinned"),
                                                           str(tmp_path / "never"), str(tmp_path / "dead.jsonl")), daemon=True)
    holder.start()
    doomed_reader.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(shared_root, logs, tmp_path / "stop")
    try:
        _wait_file(tmp_path / "held.pinned", holder)
        _wait_file(tmp_path / "dead.pinned", doomed_reader)
        t_pinned = time.time()
        os.kill(doomed_reader.pid, signal.SIGKILL)  # a reader dies holding its pin
        doomed_reader.join(10)

        # node B: 3x max written, then an explicit evict-to-zero, both while A holds its pin
        for seed in range(2):
            fleet.start_writer("nB", url, 100 + seed, min_size=64 * KiB, max_size=256 * KiB, keys=400,
                               budget_bytes=3 * max_b // 2, lease_s=LEASE_S)
        fleet.join(120)
        # the pin must outlive several of its own lease lengths: it is renewed while held
        time.sleep(max(0.0, t_pinned + 3 * PIN_LEASE_S - time.time()))
        report = ctl.evict(to=0)
        assert report.files > 0
        assert "held" in ctl, "node B's pressure or evict(to=0) removed an entry node A has pinned"
        assert report.pinned_skipped >= 1
        # the killed reader's pin has expired (pin_lease_s without renewal): its entry is evictable
        ctl.evict(to=0)
        assert "dead-reader" not in ctl, "a dead reader's pin never expired"
        assert ctl.read("dead-reader") is None

        (tmp_path / "release").write_text("go")
        holder.join(30)
        assert holder.exitcode == 0
    finally:
        fleet.kill_all()
        for p in (holder, doomed_reader):
            if p.is_alive():
                p.kill()

    for lg in fleet.logs:
        assert lg.bad() == [], f"{lg.path.name}: {lg.bad()[:3]}"
        assert lg.events("done")
    written = sum(x["size"] for lg in fleet.logs for x in lg.events("ok"))
    assert written >= 2.5 * max_b
    released = holder_log.load().events("released")
    assert released and released[0]["problems"] == [] and released[0]["checks"] > 10 and released[0]["ok"], (
        f"the pinned file changed or vanished under node A's reader: {released}"
    )
    # released: now it goes like any other entry
    assert ctl.read("held") == held_value
    ctl.evict(to=0)
    assert "held" not in ctl, "an entry whose pin was released must be evictable"
    assert assert_index_matches_files(shared_root, ctl, settle_s=40) == 0
    ctl.close()
