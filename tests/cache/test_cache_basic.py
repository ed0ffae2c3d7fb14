"""The managed cache's API, one behaviour at a time, on real files."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import time
from pathlib import Path

import pytest
import xxhash

from cachewatch.engine import Cache, CacheError, CacheFull, CacheRootError
from cachewatch.engine.cache import CacheMiss

KiB = 1024


def entry_files(root: Path) -> dict[str, int]:
    """Every file under the shard directories, with its size (what the disk holds)."""
    out = {}
    for shard in root.iterdir():
        if shard.name == ".cachewatch":
            continue
        for f in shard.iterdir():
            out[f"{shard.name}/{f.name}"] = f.stat().st_size
    return out


def test_put_get_read_round_trip(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        path = cache.put("a", b"hello")
        assert path.read_bytes() == b"hello"
        assert cache.get("a") == path
        assert cache.read("a") == b"hello"
        assert "a" in cache and "b" not in cache
        assert cache.get("b") is None and cache.read("b") is None
        s = cache.stats()
        assert (s.hits, s.misses) == (2, 2)  # `in` counts neither
        assert s.entries == 1 and s.data_bytes == 5 and s.size_bytes == s.block_bytes
        info = cache.entry("a")
        assert info is not None and info.checksum == xxhash.xxh3_64_hexdigest(b"hello")


def test_overwrite_replaces_atomically_and_keeps_one_entry(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        cache.put("k", b"old" * 1000)
        cache.put("k", b"new")
        assert cache.read("k") == b"new"
        s = cache.stats()
        assert s.entries == 1 and s.data_bytes == 3
        assert len(entry_files(cache_root)) == 1


def test_lru_order_evicts_least_recently_used(cache_root: Path) -> None:
    with Cache(cache_root, max_size=10 * 4 * KiB, target_ratio=0.5, flush_interval=0) as cache:
        for i in range(5):
            cache.put(f"k{i}", b"x" * 4000)
            time.sleep(0.002)
        cache.get("k0")  # k0 becomes the most recently used
        time.sleep(0.002)
        cache.put("k5", b"x" * 4000)  # 6 x 4 KiB > target 20 KiB: evict down
        remaining = {e.key for e in cache.entries()}
        assert "k0" in remaining and "k5" in remaining
        assert "k1" not in remaining and "k2" not in remaining
        assert cache.stats().used_bytes <= cache.target_bytes


def test_eviction_log_records_files_bytes_reason_sizes(cache_root: Path) -> None:
    with Cache(cache_root, max_size=40 * KiB) as cache:
        for i in range(20):
            cache.put(f"k{i}", b"y" * 4000)
        log = cache.eviction_log()
        assert log, "filling past the target must evict"
        r = log[0]
        assert r.reason == "target" and r.files >= 1 and r.bytes == r.files * 4 * KiB
        assert r.size_after == r.size_before - r.bytes and r.keys
        assert sum(x.files for x in log) == cache.stats().evicted_files
        assert "Evicted" in r.describe()
    events = (cache_root / ".cachewatch" / "events.jsonl").read_text().splitlines()
    assert len(events) == len(log)


def test_manual_evict_and_dry_run(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        for i in range(10):
            cache.put(f"k{i}", b"z" * 4096)
        dry = cache.evict(to=2 * 4096, dry_run=True)
        assert dry.dry_run and dry.files == 8 and len(cache) == 10
        real = cache.evict(to=2 * 4096)
        assert real.files == 8 and real.reason == "manual" and len(cache) == 2
        assert set(dry.keys) == set(real.keys)
        assert len(entry_files(cache_root)) == 2


def test_ttl_expires_old_entries(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB", ttl=0.2) as cache:
        cache.put("old", b"1")
        time.sleep(0.3)
        cache.put("new", b"2")
        assert cache.get("old") is None and cache.read("new") == b"2"
        report = cache.expire()
        assert report.files == 1 and report.reason == "ttl" and report.keys == ("old",)
        assert cache.stats().expired_files == 1
        assert len(entry_files(cache_root)) == 1


def test_put_too_large_is_cache_full_and_changes_nothing(cache_root: Path) -> None:
    with Cache(cache_root, max_size="64KiB") as cache:
        cache.put("small", b"s")
        with pytest.raises(CacheFull, match="raise max_size or split the value"):
            cache.put("big", b"b" * 70 * KiB)
        assert cache.read("small") == b"s" and "big" not in cache
        assert cache.stats().reserved_bytes == 0
        assert os.listdir(cache_root / ".cachewatch" / "tmp") == []


def test_put_file_copy_and_move(tmp_path: Path, cache_root: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 100)
    with Cache(cache_root, max_size="1MiB") as cache:
        p = cache.put_file("copied", src)
        assert src.exists() and p.read_bytes() == src.read_bytes()
        p2 = cache.put_file("moved", src, move=True)
        assert not src.exists() and p2.read_bytes() == b"payload" * 100
        assert cache.entry("moved").checksum == xxhash.xxh3_64_hexdigest(b"payload" * 100)
        with pytest.raises(CacheError, match="does not exist"):
            cache.put_file("x", tmp_path / "missing")
        with pytest.raises(CacheError, match="not a regular file"):
            cache.put_file("x", tmp_path)


def test_failed_move_keeps_the_source(tmp_path: Path, cache_root: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"q" * 200 * KiB)
    with Cache(cache_root, max_size="64KiB") as cache:
        with pytest.raises(CacheFull):
            cache.put_file("big", src, move=True)
    assert src.read_bytes() == b"q" * 200 * KiB


def test_pin_missing_key_is_a_keyerror(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        with pytest.raises(KeyError):
            with cache.pin("nope"):
                pass
        with pytest.raises(CacheMiss, match="'nope' is not in cache"):
            with cache.pin("nope"):
                pass


def test_delete(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        cache.put("a", b"1")
        assert cache.delete("a") is True and cache.delete("a") is False
        assert entry_files(cache_root) == {} and cache.stats().size_bytes == 0


def test_root_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a dir")
    with pytest.raises(CacheRootError, match="is a file, not a directory"):
        Cache(f, max_size="1MiB")
    assert f.read_text() == "not a dir"


def test_foreign_non_empty_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    d = tmp_path / "images"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(CacheRootError, match="not a cachewatch cache.*cachewatch watch"):
        Cache(d, max_size="1MiB")
    assert sorted(os.listdir(d)) == ["cat.jpg"]


def test_bad_limits(cache_root: Path) -> None:
    with pytest.raises(CacheError, match="max_size = '-1GB'"):
        Cache(cache_root, max_size="-1GB")
    with pytest.raises(CacheError, match="target_size"):
        Cache(cache_root, max_size="1MB", target_size="2MB")
    with pytest.raises(CacheError, match="target_ratio"):
        Cache(cache_root, max_size="1MB", target_ratio=0)
    assert not cache_root.exists()


def test_reopen_reuses_stored_limits_and_counters(cache_root: Path) -> None:
    with Cache(cache_root, max_size="2MiB", target_ratio=0.5) as cache:
        cache.put("a", b"abc")
        cache.get("a")
    with Cache(cache_root) as again:  # no max_size: the stored one
        s = again.stats()
        assert s.max_bytes == 2 * 2**20 and s.target_bytes == 2**20
        assert s.entries == 1 and s.hits == 1
    with pytest.raises(CacheError, match="no max_size yet"):
        Cache(cache_root.parent / "fresh")
    assert not (cache_root.parent / "fresh").exists()


def test_over_max_at_startup_goes_down_to_target(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        for i in range(60):
            cache.put(f"k{i}", b"w" * 16 * KiB)
    # Only an explicit resize changes a root's max (issue 9, item 3); then it applies at once.
    with Cache(cache_root, max_size="256KiB", resize=True) as smaller:
        assert smaller.max_bytes == 256 * KiB
        s = smaller.stats()
        assert s.used_bytes <= smaller.target_bytes
        assert smaller.eviction_log(1)[0].reason == "startup"
        assert sum(entry_files(cache_root).values()) <= smaller.target_bytes


def test_closed_cache_refuses_with_a_clear_error(cache_root: Path) -> None:
    cache = Cache(cache_root, max_size="1MiB")
    cache.close()
    with pytest.raises(CacheError, match="is closed"):
        cache.get("a")


def test_pickled_cache_opens_the_same_root(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        cache.put("a", b"1")
        clone = pickle.loads(pickle.dumps(cache))
        assert clone.read("a") == b"1" and clone.max_bytes == cache.max_bytes
        clone.close()


def _child_puts(cache: Cache, q) -> None:
    cache.put("from-child", b"c" * 10)
    q.put(cache.read("from-parent"))


def test_forked_child_uses_its_own_handles(cache_root: Path) -> None:
    cache = Cache(cache_root, max_size="1MiB")
    cache.put("from-parent", b"p")
    q = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=_child_puts, args=(cache, q))
    proc.start()
    assert q.get(timeout=30) == b"p"
    proc.join(30)
    assert proc.exitcode == 0
    assert cache.read("from-child") == b"c" * 10
    cache.put("after", b"still works in the parent")
    assert cache.stats().entries == 3
    cache.close()


def test_lost_index_is_refused_not_swept(cache_root: Path) -> None:
    with Cache(cache_root, max_size="1MiB") as cache:
        path = cache.put("precious", b"hours of preprocessing")
    for f in (cache_root / ".cachewatch").glob("index.sqlite*"):
        f.unlink()
    with pytest.raises(CacheRootError, match="index is missing.*verify .* --repair --max-size"):
        Cache(cache_root, max_size="1MiB")
    assert path.read_bytes() == b"hours of preprocessing"  # nothing was swept
