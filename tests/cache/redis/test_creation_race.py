"""Nodes creating one shared root at the same time end up on one index, one bound.

Each process that finds no marker makes a uuid (its index's prefix). The marker is now created
first, only if absent (link), so of several creators one names the index and the others adopt
it; before, each initialised its own index and the last marker rename won: two bounds on one set
of files, and the losers' entries missing from the winner's index. The creators here are real
processes, stopped (SIGSTOP, the cache's own fault points) at the steps that matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cachewatch.engine import Cache
from cachewatch.engine.errors import CacheError

from tests.support.helpers import start_stopped_at

from .nodes import SPAWN

MiB = 1024 * 1024


def _creator(root: Path, url: str, node: str, max_size: str | None, stop_at: str | None) -> subprocess.Popen[str]:
    code = (
        "import sys\n"
        "from cachewatch.engine import Cache\n"
        f"c = Cache({str(root)!r}, max_size={max_size!r}, index={url!r}, node={node!r})\n"
        f"c.put('from-' + {node!r}, {node!r}.encode() * 1000)\n"
        "print(c.stats().index_id, flush=True)\n"
        "c.close()\n"
    )
    if stop_at:
        return start_stopped_at(code, stop_at, stdout=subprocess.PIPE, text=True)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return out.strip()


def _marker(root: Path) -> dict:
    return json.loads((root / ".cachewatch" / "redis.json").read_text())


def test_a_creator_that_lost_the_race_adopts_the_index_made_meanwhile(redis_server, shared_root: Path) -> None:
    late = _creator(shared_root, redis_server.url, "late", "8MiB", "redis_open_before_marker")
    try:
        first = _finish(_creator(shared_root, redis_server.url, "first", "4MiB", None))
        marker = _marker(shared_root)
        os.kill(late.pid, signal.SIGCONT)
        assert _finish(late) == first  # the same index: one uuid, one bound
    finally:
        if late.poll() is None:
            late.kill()
    assert _marker(shared_root) == marker  # not replaced
    assert not list((shared_root / ".cachewatch").glob("redis.json*.tmp"))
    with Cache(shared_root, index=redis_server.url, node="check") as c:
        assert c.read("from-first") == b"first" * 1000 and c.read("from-late") == b"late" * 1000
        assert c.stats().max_bytes == 4 * MiB  # the first creator's limits; the late one adopted them
        assert len(c) == 2


def test_an_opener_without_max_size_waits_for_the_creators_index(redis_server, shared_root: Path) -> None:
    creator = _creator(shared_root, redis_server.url, "maker", "3MiB", "redis_open_before_init")
    try:
        assert (shared_root / ".cachewatch" / "redis.json").is_file()  # the marker, no index yet
        resume = threading.Timer(0.5, os.kill, (creator.pid, signal.SIGCONT))
        resume.start()
        with Cache(shared_root, index=redis_server.url, node="opener") as c:  # no max_size
            assert c.max_bytes == 3 * MiB
            c.put("from-opener", b"o" * 100)
        resume.join()
        index_id = _finish(creator)
    finally:
        if creator.poll() is None:
            creator.kill()
    with Cache(shared_root, index=redis_server.url, node="check") as c:
        assert c.stats().index_id == index_id and len(c) == 2


def test_a_creator_killed_between_marker_and_index(redis_server, shared_root: Path) -> None:
    """Its marker names an index nobody made: an opener without max_size says so after its wait
    (and changes nothing); one with a max_size makes that index (the marker's uuid) and works."""
    creator = _creator(shared_root, redis_server.url, "dead", "3MiB", "redis_open_before_init")
    creator.kill()
    creator.wait()
    marker = _marker(shared_root)
    with pytest.raises(CacheError, match=r"has no max_size yet \(its \.cachewatch/redis\.json exists but no process made its index within 0\.3s\)"):
        Cache(shared_root, index=redis_server.url, node="opener", wait_timeout=0.3)
    assert _marker(shared_root) == marker
    with Cache(shared_root, max_size="2MiB", index=redis_server.url, node="opener") as c:
        c.put("k", b"v" * 10)
        assert c.max_bytes == 2 * MiB and c.stats().index_id == marker["uuid"]
    assert _marker(shared_root) == marker


def _create_and_put(root: str, url: str, node: str, barrier, out: str) -> None:
    barrier.wait()
    try:
        c = Cache(root, max_size="16MiB", index=url, node=node)
        c.put(f"from-{node}", node.encode() * 500)
        Path(out).write_text(c.stats().index_id or "")
        c.close()
    except Exception as exc:  # (written for the test to report)
        Path(out).write_text(f"error: {exc}")


def test_six_nodes_creating_one_root_at_once_share_one_index(redis_server, shared_root: Path, tmp_path: Path) -> None:
    n = 6
    barrier = SPAWN.Barrier(n)
    outs = [tmp_path / f"out{i}" for i in range(n)]
    procs = [SPAWN.Process(target=_create_and_put, args=(str(shared_root), redis_server.url, f"n{i}", barrier, str(outs[i])))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    ids = [o.read_text() for o in outs]
    assert not [i for i in ids if i.startswith("error")], ids
    assert len(set(ids)) == 1 and ids[0] == _marker(shared_root)["uuid"], ids
    with Cache(shared_root, index=redis_server.url, node="check") as c:
        assert sorted(e.key for e in c.entries()) == sorted(f"from-n{i}" for i in range(n))


def test_a_sqlite_opener_waiting_on_a_root_that_turns_out_redis_says_so(redis_server, shared_root: Path) -> None:
    """``Cache(root)`` without an index names SQLite while the root's marker is not written yet;
    it waits for limits, sees the Redis marker appear, and says to open again (which works)."""
    creator = _creator(shared_root, redis_server.url, "maker", "3MiB", "redis_open_before_marker")
    try:
        resume = threading.Timer(0.5, os.kill, (creator.pid, signal.SIGCONT))
        resume.start()
        with pytest.raises(CacheError, match="is being created with a Redis index by another process; open it again"):
            Cache(shared_root)
        resume.join()
        _finish(creator)
    finally:
        if creator.poll() is None:
            creator.kill()
    assert not (shared_root / ".cachewatch" / "index.sqlite").exists()  # no second index made
    with Cache(shared_root) as again:
        assert again.max_bytes == 3 * MiB and again.read("from-maker") == b"maker" * 1000
