"""A pinned entry is never deleted under its reader, and a dead reader's pin is released."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache, CacheFull

from .consistency import assert_index_matches_files
from .helpers_pins import filler, hold_pin

KiB = 1024


def _fill(root: Path, n_procs: int, n_bytes: int) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=filler, args=(str(root), f"f{i}", n_bytes)) for i in range(n_procs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_reader_holding_a_pin_while_others_fill_the_cache(cache_root: Path, tmp_path: Path) -> None:
    with Cache(cache_root, max_size=512 * KiB) as cache:
        cache.put("held", b"H" * 100 * KiB)
        path = cache.get("held")
        ino = os.stat(path).st_ino
    release, report = tmp_path / "release", tmp_path / "report"
    ctx = mp.get_context("fork")
    holder = ctx.Process(target=hold_pin, args=(str(cache_root), "held", str(release), str(report)))
    holder.start()
    while not report.exists():
        time.sleep(0.01)
    _fill(cache_root, 4, 20 * 512 * KiB)  # 20x max written around the pinned entry
    release.touch()
    holder.join(60)
    assert holder.exitcode == 0
    assert report.read_text() == "ok"  # the holder re-read its file throughout: always there, unchanged
    with Cache(cache_root) as cache:
        assert cache.stats().evicted_files > 50
        assert os.stat(cache.get("held")).st_ino == ino  # the very same file survived
        _fill(cache_root, 1, 2 * 512 * KiB)
        assert "held" not in cache  # unpinned, it is the least recently used and goes
    assert_index_matches_files(cache_root)


def test_pin_of_a_killed_reader_is_released(cache_root: Path, tmp_path: Path) -> None:
    with Cache(cache_root, max_size=512 * KiB) as cache:
        cache.put("held", b"H" * 100 * KiB)
    release, report = tmp_path / "release", tmp_path / "report"
    holder = mp.get_context("fork").Process(target=hold_pin, args=(str(cache_root), "held", str(release), str(report)))
    holder.start()
    while not report.exists():
        time.sleep(0.01)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    _fill(cache_root, 2, 4 * 512 * KiB)
    with Cache(cache_root) as cache:
        assert "held" not in cache


def test_overwrite_while_pinned_keeps_the_readers_version(cache_root: Path) -> None:
    reader = Cache(cache_root, max_size=1024 * KiB)
    writer = Cache(cache_root)
    reader.put("k", b"old" * 1000)
    with reader.pin("k") as path:
        writer.put("k", b"new")
        assert path.read_bytes() == b"old" * 1000  # the pinned path never changes under the reader
        assert writer.read("k") == b"new"
        s = writer.stats()
        assert s.replaced_pinned_bytes == reader.block_bytes  # still on disk, still counted
        assert s.entries == 1
        writer.put("k", b"newer")  # the versioned name is not pinned: replaced in place
        assert writer.read("k") == b"newer" and path.read_bytes() == b"old" * 1000
    writer.recover()  # reaps old versions whose readers are gone
    assert writer.stats().replaced_pinned_bytes == 0
    assert not path.exists() or path.read_bytes() != b"old" * 1000
    reader.close()
    writer.close()
    assert_index_matches_files(cache_root)


def test_delete_while_pinned(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache, Cache(cache_root) as other:
        cache.put("k", b"v" * 5000)
        with cache.pin("k") as path:
            assert other.delete("k")
            assert "k" not in other and path.read_bytes() == b"v" * 5000
            assert other.stats().replaced_pinned_bytes > 0
        other.evict()  # any eviction reaps released old versions
        assert other.stats().size_bytes == 0
    assert_index_matches_files(cache_root)


def test_nothing_fits_when_everything_is_pinned(cache_root: Path) -> None:
    with Cache(cache_root, max_size=80 * KiB) as cache, Cache(cache_root) as other:
        for i in range(3):
            cache.put(f"p{i}", b"p" * 20 * KiB)  # 60 KiB, under the 72 KiB target
        with cache.pin("p0"), cache.pin("p1"), cache.pin("p2"):
            with pytest.raises(CacheFull, match="pinned by readers"):
                other.put("new", b"n" * 24 * KiB)  # needs 24 KiB, only 80 - 60 can ever be free
            assert other.stats().reserved_bytes == 0
        other.put("new", b"n" * 24 * KiB)  # pins gone: evicts and fits
        assert "new" in other


def _hold_owner(owners_dir: str, token_out) -> None:  # noqa: ANN001 - mp plumbing
    from cachewatch.engine.cache.locks import OwnerLock

    lock = OwnerLock(Path(owners_dir))
    token_out.put(lock.token)
    time.sleep(120)  # until killed


def test_asking_whether_an_owner_lives_leaks_no_descriptor_and_sees_its_death(tmp_path: Path) -> None:
    # Evictions ask this for every pinned candidate; each call used to leave one fd open.
    from cachewatch.engine.cache.locks import owner_alive

    ctx = mp.get_context("spawn")
    tokens = ctx.Queue()
    holder = ctx.Process(target=_hold_owner, args=(str(tmp_path), tokens))
    holder.start()
    try:
        token = tokens.get(timeout=60)
        before = len(os.listdir("/proc/self/fd"))
        assert all(owner_alive(tmp_path, token) for _ in range(200))
        assert len(os.listdir("/proc/self/fd")) == before
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        assert not owner_alive(tmp_path, token)
        assert not (tmp_path / f"{token}.lock").exists()  # the dead owner's token file is swept
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        if holder.is_alive():
            holder.kill()
        holder.join(30)


def _child_keeps_no_victim(fd: int, ino: int, out: str, release: str) -> None:
    try:  # (the number may have been given to another file since)
        verdict = "open" if os.fstat(fd).st_ino == ino else "closed"
    except OSError:
        verdict = "closed"
    Path(out + ".tmp").write_text(verdict)
    os.rename(out + ".tmp", out)  # (whole: the parent reads it as soon as the name exists)
    while not os.path.exists(release):
        time.sleep(0.01)


def test_a_forked_child_does_not_keep_an_evictors_victim_locked(tmp_path: Path) -> None:
    # The evictor holds each victim's file exclusively locked from its pin test to its unlink, so
    # that no reader can pin it in between. A child forked meanwhile (a DataLoader worker) must not
    # keep that lock: readers would then wait on the file for as long as the child lives.
    import fcntl

    from cachewatch.engine.cache import cache as cache_mod

    victim = tmp_path / "victim"
    victim.write_bytes(b"v")
    held: dict[int, int] = {}
    fd = os.open(victim, os.O_RDONLY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    cache_mod._hold_fd(held, 7, fd)
    out, release = tmp_path / "out", tmp_path / "release"
    child = mp.get_context("fork").Process(target=_child_keeps_no_victim, args=(fd, victim.stat().st_ino, str(out), str(release)))
    child.start()
    try:
        while not out.exists():
            time.sleep(0.01)
        assert out.read_text() == "closed"
        cache_mod._close_held(held, 7)  # the evictor is done with it
        probe = os.open(victim, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a reader pins it while the child lives
        finally:
            os.close(probe)
        assert held == {} and fd not in cache_mod._HELD_FDS
    finally:
        release.touch()
        child.join(30)
    assert child.exitcode == 0
