"""Property and concurrency tests of the cache's invariants after crashes (issue 11, Tests).

* random put/get/pin/delete/evict sequences in a real child process, killed with SIGKILL at
  a random crash point of the real code path (or at a random op): afterwards every LIVE
  row has its file at once, and after an open the index equals the files and the bound holds;
* two processes evicting at once never count an entry twice.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachewatch.engine import Cache

from .consistency import assert_index_matches_files
from .test_faults import _live_rows_have_their_files

KiB = 1024
MAX = 256 * KiB

# Every step of the put path (the index steps run when the child's batch is committed: at an
# evict, a delete, a full batch or close) and of an eviction.
_CRASH_POINTS = [
    None, "put_after_reserve", "put_mid_write", "put_after_journal", "put_after_rename", "put_before_commit",
    "put_after_index", "evict_after_mark", "evict_mid_reap",
]

_CHILD = r"""
import json, os, signal, sys
from cachewatch.engine import Cache
root, ops = sys.argv[1], json.loads(sys.argv[2])
cache = Cache(root, sweep=False)
pins = []
for op in ops:
    kind = op[0]
    if kind == "put":
        cache.put(op[1], bytes([65 + op[2] % 26]) * op[2])
    elif kind == "get":
        cache.get(op[1])
    elif kind == "read":
        data = cache.read(op[1])
        assert data is None or len(set(data)) <= 1, "a mixed value"
    elif kind == "pin":
        cm = cache.pin(op[1]) if op[1] in cache else None
        if cm is not None:
            try:
                cm.__enter__()
                pins.append(cm)  # held until the end (or the kill)
            except KeyError:
                pass
    elif kind == "delete":
        cache.delete(op[1])
    elif kind == "evict":
        cache.evict(to=op[1])
    elif kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
for cm in pins:
    cm.__exit__(None, None, None)
cache.close()
"""

keys = st.sampled_from([f"k{i}" for i in range(6)])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 40 * KiB)),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("read"), keys),
        st.tuples(st.just("pin"), keys),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("evict"), st.integers(0, MAX)),
        st.tuples(st.just("kill")),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, crash=st.sampled_from(_CRASH_POINTS), second=ops)
def test_random_sequences_killed_anywhere_keep_index_equal_to_files(tmp_path_factory, ops, crash, second) -> None:
    root = tmp_path_factory.mktemp("prop") / "cache"
    Cache(root, max_size=MAX, target_ratio=0.75, sweep=False).close()
    env = dict(os.environ)
    env.pop("CACHEWATCH_CRASH_AT", None)
    if crash:
        env["CACHEWATCH_CRASH_AT"] = crash
    # Two runs on the same root: the second starts over whatever the first (maybe killed) left.
    for program in (ops, second):
        r = subprocess.run([sys.executable, "-c", _CHILD, str(root), json.dumps(program)], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode in (0, -signal.SIGKILL), r.stderr
        assert _live_rows_have_their_files(root) == []  # at once, before any recovery
    assert_index_matches_files(root)  # after an open: rows == files, counters exact, bound held


def _evictor(root: str, goals: list[int], out: "mp.Queue[tuple[int, int]]") -> None:
    files = nbytes = 0
    with Cache(root, sweep=False) as cache:
        for goal in goals:
            r = cache.evict(to=goal)
            files += r.files
            nbytes += r.bytes
    out.put((files, nbytes))


def test_two_processes_evicting_at_once_never_double_count(cache_root: Path) -> None:
    n = 400
    with Cache(cache_root, max_size=n * 8 * KiB, sweep=False) as cache:
        for i in range(n):
            cache.put(f"k{i}", b"v" * 3000)
        start = cache.stats()
    ctx = mp.get_context("fork")
    out: "mp.Queue[tuple[int, int]]" = ctx.Queue()
    goals = [start.size_bytes * f // 20 for f in range(19, -1, -1)]  # step down to 0, both at once
    procs = [ctx.Process(target=_evictor, args=(str(cache_root), goals, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = sum(r[0] for r in results)
    nbytes = sum(r[1] for r in results)
    assert files == n, f"the two evictors reported {files} evictions of {n} entries"
    assert nbytes == start.size_bytes
    with Cache(cache_root, sweep=False) as cache:
        s = cache.stats()
        assert s.entries == 0 and s.size_bytes == 0
        assert s.evicted_files - start.evicted_files == n
        assert s.evicted_bytes - start.evicted_bytes == start.size_bytes
    assert assert_index_matches_files(cache_root) == 0
