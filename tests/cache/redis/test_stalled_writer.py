"""A writer stopped (SIGSTOP) in the middle of a put for 3x its lease, while other nodes keep
writing: its bytes stay counted (reserved, then quarantined) until a reconciler has removed its
file; resumed, its put is refused (or re-reserved), and nothing it wrote is left uncounted."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from cachewatch.engine import Cache

import pytest

from cachewatch.engine.cache.keys import key_to_name

from ..workers import FrozenSampler, _state, make_value, on_disk_bytes
from .nodes import SPAWN, STALL_POINTS, Fleet, WorkerLog, assert_bound_held, assert_index_matches_files, stalled_writer

KiB, MiB = 1024, 1024 * 1024
LEASE_S = 2.0


def _linked_name(root: Path, key: str, part: Path) -> Path | None:
    """The final name a stalled writer linked its ``.part`` to (same inode, in the key's shard)."""
    try:
        ino = part.stat().st_ino
    except FileNotFoundError:
        return None
    shard = root / key_to_name(key).split("/")[0]
    for f in shard.iterdir() if shard.is_dir() else []:
        if f.stat().st_ino == ino:
            return f
    return None


@pytest.mark.parametrize("point", STALL_POINTS)
def test_writer_stalled_past_its_lease_cannot_break_the_bound(redis_server, shared_root: Path, tmp_path: Path, point: str) -> None:
    max_b = 16 * MiB
    url = redis_server.url
    ctl = Cache(shared_root, max_size=max_b, index=url, node="ctl", lease_s=LEASE_S)
    block = ctl.stats().block_bytes
    rng = random.Random(5)
    for i in range(56):  # 14 MiB: the others will need room while the stalled put holds its bytes
        ctl.put(f"pre{i}", make_value(rng, 256 * KiB, 256 * KiB))

    stall_marker = tmp_path / "stalled"
    stall_log = WorkerLog(tmp_path / "stalled.jsonl", "nS")
    size = 3 * MiB
    charge = -(-size // block) * block
    stalled = SPAWN.Process(
        target=stalled_writer,
        args=(str(shared_root), {"index": url, "node": "nS", "lease_s": LEASE_S}, "big", size, str(stall_marker),
              str(stall_log.path), point),
        daemon=True,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(shared_root, logs, tmp_path / "stop")
    sampler = None
    try:
        # the other nodes first: writing already when the stalled writer stops
        for node in ("n1", "n2"):
            for seed in range(2):
                fleet.start_writer(node, url, 10 * int(node[1:]) + seed, min_size=32 * KiB, max_size=256 * KiB,
                                   keys=400, lease_s=LEASE_S)
        sampler = FrozenSampler(shared_root, fleet.pids(), block, max_b, interval_s=0.005).start()
        fleet.wait_opened()
        deadline = time.monotonic() + 60
        while sum(len(lg.load().events("ok")) for lg in fleet.logs) < 8:
            assert time.monotonic() < deadline, "the other writers are not writing"
            time.sleep(0.05)
        # No sample while it runs to its stall: not one of the sampler's pids (the sampler's
        # SIGCONT would resume it from its stop), it would move during a walk.
        with sampler.between_samples():
            stalled.start()
            deadline = time.monotonic() + 60
            while not (stall_marker.exists() and _state(stalled.pid) in ("T", "t")):
                assert stalled.is_alive(), f"the stalled writer exited early: {stall_log.load().lines}"
                assert time.monotonic() < deadline, "the writer never stopped inside its put (no write into a .part file?)"
                time.sleep(0.01)
        t_stall = time.time()
        part = Path(stall_marker.read_text())
        final = None
        if point == "before-create":
            assert not part.exists(), "stopped before creating its .part"
            assert ctl.stats().reserved_bytes >= charge, "stopped after its reservation"
        elif point == "mid-write":
            assert part.is_file() and 0 < part.stat().st_size < size, "stopped mid-write: part of the value is on disk"
        else:
            final = _linked_name(shared_root, "big", part)
            assert final is not None and final.stat().st_size == size, "stopped after linking the whole value into place"
            assert "big" not in ctl, "stopped before its commit"

        def its_files_on_disk() -> bool:
            return part.is_file() or (final is not None and final.exists())

        # While it is stopped: as long as its .part is on disk, its bytes are counted (reserved
        # until the lease expires, quarantined after). Stats first, then the file: the file can
        # only disappear in between (the writer is stopped), never appear.
        uncounted: list[tuple[float, int, int]] = []
        checks_after_expiry = 0
        max_quarantined = 0
        reconciled = False
        while time.time() < t_stall + 3 * LEASE_S:
            s = ctl.stats()
            max_quarantined = max(max_quarantined, s.quarantined_bytes)
            if its_files_on_disk():
                if s.reserved_bytes + s.quarantined_bytes < charge:
                    uncounted.append((time.time() - t_stall, s.reserved_bytes, s.quarantined_bytes))
                if time.time() > t_stall + LEASE_S:
                    checks_after_expiry += 1
            if not reconciled and time.time() > t_stall + 1.5 * LEASE_S:
                # a reconciler (run by hand here; writers that need room run it too) takes it back
                ctl.reconcile()
                reconciled = True
                assert not its_files_on_disk(), f"reconcile left the expired writer's files in place ({part}, {final})"
                s = ctl.stats()
                assert s.quarantined_bytes < charge, "the quarantine was not returned after its file was removed"
            time.sleep(0.05)
        assert uncounted == [], f"the stalled writer's files were on disk while its bytes were not counted: {uncounted[:3]}"
        assert reconciled
        others_during_stall = sum(
            1 for lg in fleet.logs for x in lg.load().events("ok", after=t_stall) if x["t"] < t_stall + 3 * LEASE_S
        )
        assert others_during_stall > 0, "the other nodes must keep writing while one writer is stalled"

        with sampler.between_samples():  # frozen from the next sample on, as the others
            os.kill(stalled.pid, signal.SIGCONT)
            sampler.pids.append(stalled.pid)
        stalled.join(60)
        assert stalled.exitcode == 0, f"stalled writer exit code {stalled.exitcode}: {stall_log.load().lines}"
        time.sleep(1.0)
        fleet.stop_and_join(60)
    finally:
        if sampler is not None:
            sampler.stop()
        fleet.kill_all()
        if stalled.pid is not None and stalled.is_alive():
            os.kill(stalled.pid, signal.SIGCONT)
            stalled.kill()

    stall_log.load()
    outcome = stall_log.events("ok", "error", "unavailable", "crash")
    assert len(outcome) == 1 and outcome[0]["stalled"], f"the put did not stall as planned: {stall_log.lines}"
    o = outcome[0]
    if o["ev"] == "error":
        assert "lease" in o["msg"].lower(), f"a refused put must say it lost its lease: {o['msg']}"
    else:
        assert o["ev"] == "ok", f"the resumed put must be refused for its lease, or succeed re-reserved: {o}"
    assert stall_log.events("after_ok"), f"the refused process must be able to write again: {stall_log.lines}"

    assert_bound_held(sampler, max_b, f" (quarantine seen: {max_quarantined})")
    for lg in fleet.logs:
        assert lg.bad() == [], f"{lg.path.name}: {lg.bad()[:3]}"

    # Nothing uncounted: with every writer gone, what is on disk is at most what the index counts.
    s = ctl.stats()
    used, _ = on_disk_bytes(shared_root, block)
    assert used <= s.size_bytes + s.reserved_bytes + s.quarantined_bytes, (
        f"{used} bytes on disk, counted: size {s.size_bytes} + reserved {s.reserved_bytes} + quarantined {s.quarantined_bytes}"
    )
    assert assert_index_matches_files(shared_root, ctl, settle_s=40) > 0
    if o["ev"] == "ok":
        assert o["checksum"] in {e.checksum for e in ctl.entries() if e.key == "big"} or "big" not in ctl
    ctl.close()
