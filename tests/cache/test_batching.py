"""Issue 11, item 1: index rows are batched per process, off the put path.

What a batch changes for readers, with real processes: the putting process sees its put at
once; another process sees it once the batch commits (the timer, flush, close), never a
wrong value before; two processes putting one key never replace each other's file.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

from cachewatch.engine import Cache

from tests.support.helpers import wait_for
from .consistency import assert_index_matches_files
from .workers import make_value, value_ok

KiB = 1024


def _reader_sees(root: Path, key: str) -> bytes | None:
    # A fresh process each time: nothing of the writer's memory can help it.
    code = f"from cachewatch.engine import Cache\nimport sys\nv = Cache({str(root)!r}, readonly=True).read({key!r})\nsys.stdout.buffer.write(b'-' if v is None else v)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).stdout
    return None if out == b"-" else out


def test_own_puts_are_seen_at_once_and_others_see_them_after_the_batch_commits(cache_root: Path) -> None:
    with Cache(cache_root, max_size="4MiB", sweep=False, batch_puts=1000, batch_interval=3600) as cache:
        cache.put("k", b"first")
        assert cache.read("k") == b"first" and cache.get("k") is not None and "k" in cache  # this process: at once
        assert _reader_sees(cache_root, "k") is None  # another process: a miss, not a wrong value
        cache.put("k", b"second")
        assert cache.read("k") == b"second"
        cache.flush()
        assert _reader_sees(cache_root, "k") == b"second"
        cache.put("k", b"third")
        assert _reader_sees(cache_root, "k") == b"second"  # the indexed value until the next commit
    assert _reader_sees(cache_root, "k") == b"third"  # close commits
    assert assert_index_matches_files(cache_root) == 1


def test_a_batch_is_committed_by_its_timer_while_the_writer_idles(cache_root: Path) -> None:
    Cache(cache_root, max_size="4MiB", sweep=False).close()
    code = (
        "import sys, time\nfrom cachewatch.engine import Cache\n"
        f"c = Cache({str(cache_root)!r}, sweep=False, batch_interval=0.2)\n"
        "c.put('idle', b'v' * 100)\nprint('put', flush=True)\ntime.sleep(600)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "put"  # type: ignore[union-attr]
        # No flush, no close, no further call: the writer sleeps, and its timer commits the row.
        wait_for(lambda: _reader_sees(cache_root, "idle") == b"v" * 100, timeout=30, what="the timer's commit")
        assert writer.poll() is None, "the writer must still be running (not indexed by its exit)"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    assert assert_index_matches_files(cache_root) == 1


def test_the_timer_commits_every_later_batch_of_an_idle_writer(cache_root: Path) -> None:
    # One timer thread per cache, woken per batch: each batch after the first must still be
    # committed while the writer idles, not only the one that started the thread.
    Cache(cache_root, max_size="4MiB", sweep=False).close()
    code = (
        "import sys\nfrom cachewatch.engine import Cache\n"
        f"c = Cache({str(cache_root)!r}, sweep=False, batch_interval=0.2)\n"
        "for line in sys.stdin:\n"
        "    c.put(line.strip(), line.strip().encode() * 10)\n"
        "    print('put', flush=True)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for key in ("first", "second", "third"):
            writer.stdin.write(key + "\n")  # type: ignore[union-attr]
            writer.stdin.flush()  # type: ignore[union-attr]
            assert writer.stdout.readline().strip() == "put"  # type: ignore[union-attr]
            wait_for(lambda: _reader_sees(cache_root, key) == key.encode() * 10, timeout=30, what=f"the timer's commit of {key}")
        assert writer.poll() is None, "the writer must still be running (not indexed by its exit)"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    assert assert_index_matches_files(cache_root) == 3


def test_a_cache_dropped_without_close_is_not_kept_alive_by_its_batch_timer(cache_root: Path) -> None:
    cache = Cache(cache_root, max_size="4MiB", sweep=False, batch_interval=0.05)
    cache.put("k", b"v" * 100)  # starts the timer thread
    ref = weakref.ref(cache)
    timer = cache._timer  # the thread that commits its batches
    assert timer is not None and timer.is_alive() and timer in threading.enumerate()
    del cache

    def collected() -> bool:
        gc.collect()
        return ref() is None

    wait_for(collected, timeout=20, what="the dropped cache to be collected")
    wait_for(lambda: not timer.is_alive(), timeout=20, what="the timer thread to end")


def _put_one_key(root: str, seed: int, n: int) -> None:
    import random

    rng = random.Random(seed)
    with Cache(root, sweep=False) as cache:
        for _ in range(n):
            cache.put("shared", make_value(rng, 1 * KiB, 24 * KiB))


def test_two_writers_of_one_key_never_replace_each_others_file(cache_root: Path) -> None:
    """With no lock around the rename, a put never goes over an existing file (RENAME_NOREPLACE):
    each committed row keeps its own file, and the key always holds one complete value."""
    Cache(cache_root, max_size="2MiB", sweep=False).close()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_put_one_key, args=(str(cache_root), seed, 300)) for seed in (1, 2, 3)]
    for p in procs:
        p.start()
    with Cache(cache_root, sweep=False) as reader:
        while any(p.is_alive() for p in procs):
            data = reader.read("shared")
            assert data is None or value_ok(data), "a torn or mixed value was read"
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert assert_index_matches_files(cache_root, value_check=value_ok) == 1
    with Cache(cache_root, sweep=False) as cache:
        assert value_ok(cache.read("shared") or b"")
        assert cache.stats().replaced_pinned_bytes == 0
    assert sorted(os.listdir(cache_root / ".cachewatch" / "journal")) == []
