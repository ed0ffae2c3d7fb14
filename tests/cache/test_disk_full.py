"""A real full disk (a small tmpfs): a clear error, no partial file, a consistent index, still usable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachewatch.engine import Cache, CacheDiskFull

from .consistency import assert_index_matches_files

KiB = 1024


def test_enospc_during_put(tmpfs) -> None:
    root = tmpfs("2MiB") / "cache"
    cache = Cache(root, max_size="100MiB")  # the limit is far above what the disk holds
    stored = []
    with pytest.raises(CacheDiskFull) as exc:
        for i in range(100):
            cache.put(f"k{i}", os.urandom(200 * KiB))
            stored.append(f"k{i}")
    msg = str(exc.value)
    assert "disk full" in msg and "nothing was stored" in msg and "\n" not in msg
    assert 3 <= len(stored) < 10
    assert os.listdir(root / ".cachewatch" / "tmp") == []
    failed = f"k{len(stored)}"
    assert failed not in cache
    s = cache.stats()
    assert s.reserved_bytes == 0 and s.entries == len(stored)
    for key in stored:
        assert len(cache.read(key)) == 200 * KiB
    # Still usable: make room by hand, then the same put succeeds.
    cache.evict(to=0)
    cache.put(failed, b"fits now")
    assert cache.read(failed) == b"fits now"
    cache.close()
    assert_index_matches_files(root)


def test_enospc_in_put_file_keeps_the_source(tmpfs, tmp_path: Path) -> None:
    root = tmpfs("1MiB") / "cache"
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 1024 * KiB))
    with Cache(root, max_size="100MiB") as cache:
        with pytest.raises(CacheDiskFull):
            cache.put_file("big", src, move=True)  # another filesystem: copied, not linked
        assert "big" not in cache and cache.stats().reserved_bytes == 0
    assert src.stat().st_size == 3 * 1024 * KiB
    assert os.listdir(root / ".cachewatch" / "tmp") == []
    assert_index_matches_files(root)


def _fill_disk(path: Path) -> None:
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 64 * KiB)
                fh.flush()
        except OSError:
            pass
    # close may fail too on a full tmpfs; the file stays as big as it got


def test_eviction_still_works_when_another_program_filled_the_disk(tmpfs) -> None:
    fs = tmpfs("3MiB")
    root = fs / "cache"
    with Cache(root, max_size="2MiB") as cache:
        # Tiny entries: unlinking them frees less than the index transaction must write,
        # so only the cache's disk reserve can get the eviction committed.
        for i in range(5):
            cache.put(f"k{i}", b"x")
        assert (root / ".cachewatch" / "reserve").exists()
        try:
            _fill_disk(fs / "someone-elses-file")
        except OSError:
            pass
        assert os.statvfs(fs).f_bavail == 0
        report = cache.evict(to=0)  # must commit although the filesystem has not one free block
        assert report.files == 5
        assert cache.stats().entries == 0
        (fs / "someone-elses-file").unlink()
        cache.put("again", b"works")
        assert cache.read("again") == b"works"
        cache.evict(to=0)  # freeing space lets the cache keep its reserve again
        assert (root / ".cachewatch" / "reserve").exists()
    assert_index_matches_files(root)
