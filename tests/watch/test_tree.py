"""The in-memory index: a model-checked dict of (directory, name) -> (size, access), compact in memory."""

from __future__ import annotations

import os
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from cachewatch.engine.watch._scan_worker import ScanChunk, dir_seed
from cachewatch.engine.watch.tree import FileIndex

import xxhash

DIRS = ["", "a", "a/b", "c"]
NAMES = [b"x", b"y", b"z.jpg", b"\xff\xfe", b"n" * 255]

op = st.one_of(
    st.tuples(st.just("upsert"), st.sampled_from(DIRS), st.sampled_from(NAMES), st.integers(0, 10**9), st.floats(0, 1e9)),
    st.tuples(st.just("remove"), st.sampled_from(DIRS), st.sampled_from(NAMES)),
    st.tuples(st.just("touch"), st.sampled_from(DIRS), st.sampled_from(NAMES), st.floats(0, 2e9)),
    st.tuples(st.just("rmdir"), st.sampled_from(DIRS)),
    st.tuples(st.just("mvdir"), st.sampled_from(DIRS[1:]), st.sampled_from(["m", "c", "a/q"])),
    st.tuples(st.just("compact")),
    st.tuples(st.just("merge")),
)


def _under(path: str, top: str) -> bool:
    return top == "" or path == top or path.startswith(top + "/")


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=60))
def test_index_matches_a_plain_dict(ops: list) -> None:
    idx = FileIndex()
    model: dict[tuple[str, bytes], list] = {}
    for o in ops:
        kind = o[0]
        if kind == "upsert":
            _, d, n, size, acc = o
            idx.upsert(idx.dir_id(d), n, size, acc)
            if (d, n) in model:
                model[(d, n)][0] = size
                model[(d, n)][1] = max(model[(d, n)][1], acc)
            else:
                model[(d, n)] = [size, acc]
        elif kind == "remove":
            _, d, n = o
            did = idx.dir_id(d, create=False)
            freed = idx.remove(did, n) if did is not None else 0
            assert freed == (model.pop((d, n))[0] if (d, n) in model else 0)
        elif kind == "touch":
            _, d, n, t = o
            did = idx.dir_id(d, create=False)
            ok = did is not None and idx.touch(did, n, t)
            assert ok == ((d, n) in model)
            if ok:
                model[(d, n)][1] = max(model[(d, n)][1], t)
        elif kind == "rmdir":
            idx.remove_dir_tree(o[1])
            model = {k: v for k, v in model.items() if not _under(k[0], o[1])}
        elif kind == "mvdir":
            _, src, dst = o
            if _under(dst, src):
                continue  # rename(2) refuses moving a directory into itself
            idx.move_dir_tree(src, dst)
            moved = {}
            for (d, n), v in list(model.items()):
                if _under(d, dst) and not _under(d, src):
                    del model[(d, n)]  # replaced target
            for (d, n), v in list(model.items()):
                if _under(d, src):
                    del model[(d, n)]
                    moved[(dst + d[len(src):], n)] = v
            model.update(moved)
        elif kind == "compact":
            idx.compact()
        elif kind == "merge":
            idx._merge_recent()
        assert idx.entries == len(model)
        assert idx.size_bytes == sum(v[0] for v in model.values())
    idx.check()
    got = {}
    for f in idx.iter_files():
        d, _, n = f.rel_path.rpartition("/")
        got[(d, os.fsencode(n))] = [f.size_bytes, f.access_time]
    assert got == model
    # LRU order is by access time
    times = [f.access_time for f in idx.iter_files("lru")]
    assert times == sorted(times)


def test_lru_candidates_oldest_first() -> None:
    idx = FileIndex()
    d = idx.dir_id("s")
    for i in range(1000):
        idx.upsert(d, f"f{i:04d}".encode(), 100, float(1000 - i))  # f0999 is the oldest
    c = idx.lru_candidates(5)
    assert [n for _, n, _, _ in c] == [b"f0999", b"f0998", b"f0997", b"f0996", b"f0995"]
    assert all(size == 100 for _, _, size, _ in c) and [a for *_, a in c] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert idx.lru_candidates(0) == []
    idx.remove(d, b"f0998")
    assert [n for _, n, _, _ in idx.lru_candidates(2)] == [b"f0999", b"f0997"]
    assert len(idx.lru_candidates(10**9)) == 999


def test_colliding_seeds_stay_distinct_after_a_directory_moves() -> None:
    idx = FileIndex()
    a = idx.dir_id("a")
    idx.upsert(a, b"f", 10, 1.0)
    idx.move_dir_tree("a", "b")
    a2 = idx.dir_id("a")  # a new directory at the old path: must not share the moved one's seed
    idx.upsert(a2, b"f", 20, 2.0)
    assert idx.get(idx.dir_id("b"), b"f") == (10, 1.0)
    assert idx.get(a2, b"f") == (20, 2.0)
    assert idx.entries == 2 and idx.size_bytes == 30
    idx.check()


def _chunk(n_files: int, n_dirs: int) -> ScanChunk:
    c = ScanChunk()
    per = n_files // n_dirs
    for d in range(n_dirs):
        rel = f"{d:02x}"
        seed = dir_seed(rel)
        names = [xxhash.xxh128_hexdigest(f"{d}-{i}".encode())[:32] + ".jpg" for i in range(per)]  # 36 bytes, like seed 000
        c.dirs.append(rel)
        c.counts.append(len(names))
        for i, n in enumerate(names):
            nb = n.encode()
            c.names += nb + b"\0"
            c.sizes.append(100_000 + i)
            c.access.append(1.7e9 + i)
            c.keys.append(xxhash.xxh3_64_intdigest(nb, seed))
    return c


def test_memory_per_file_is_under_100_bytes() -> None:
    chunk = _chunk(40_960, 256)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx = FileIndex.from_chunk(chunk)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_file = (after - before) / idx.entries
    assert idx.entries == 40_960
    assert per_file < 100, per_file
    # and it still finds every file
    d = idx.dir_id("07")
    name = xxhash.xxh128_hexdigest(b"7-5")[:32].encode() + b".jpg"
    assert idx.get(d, name) == (100_005, 1.7e9 + 5)


def test_carry_over_keeps_the_newer_access_time() -> None:
    chunk = _chunk(512, 4)
    first = FileIndex.from_chunk(chunk)
    d = first.dir_id("01")
    name = first.name_of(int(first.find(d, xxhash.xxh128_hexdigest(b"1-3")[:32].encode() + b".jpg")))
    first.touch(d, name, 2e9)
    second = FileIndex.from_chunk(chunk, previous=first)
    assert second.get(second.dir_id("01"), name)[1] == 2e9
    other = xxhash.xxh128_hexdigest(b"1-4")[:32].encode() + b".jpg"
    assert second.get(second.dir_id("01"), other) == (100_004, 1.7e9 + 4)  # untouched: the scan's time
    assert second.size_bytes == first.size_bytes and second.entries == 512
