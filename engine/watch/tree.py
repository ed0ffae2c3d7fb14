"""The in-memory index of a watched directory: every counted file's size and last use.

A watched cache can hold hundreds of thousands of files, and the index must stay
under 100 bytes per file, so there is no Python object per file. Files live in
*slots* of parallel NumPy arrays (directory id, size, access time, name offset
and length); names are stored once in a NUL-separated byte arena; directories
are interned (a few hundred strings for the whole tree).

Finding the slot for a path (every filesystem event needs it) goes through a
64-bit key, ``xxh3_64(name, seed=<directory seed>)``: a sorted key array with
its slots (binary search), plus a small dict of keys added since the sorted
arrays were last rebuilt. A hit is always confirmed against the stored name, so
a hash collision can never make two files one.

Slots of removed files are dead until :meth:`FileIndex.compact` renumbers them;
callers outside this module therefore never keep a slot across calls, they keep
``(dir_id, name)``.

Not thread-safe: the watcher holds its lock around every call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import xxhash

from ._scan_worker import ScanChunk, dir_seed

__all__ = ["FileIndex", "IndexedFile"]

_MIN_CAPACITY = 1024
_GROWTH = 1.25  # small steps: slack in the arrays counts against the bytes-per-file budget
_SEED_STEP = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class IndexedFile:
    """One counted file, as the index sees it."""

    rel_path: str
    size_bytes: int
    access_time: float

    def to_json(self) -> dict:
        return {"rel_path": self.rel_path, "size_bytes": self.size_bytes, "access_time": self.access_time}


class FileIndex:
    """Sizes and access times of the counted files under one root, in parallel arrays."""

    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        cap = max(_MIN_CAPACITY, int(capacity))
        self._n = 0
        self._dir = np.empty(cap, np.int32)  # -1: dead slot
        self._size = np.empty(cap, np.int64)
        self._acc = np.empty(cap, np.float64)
        self._noff = np.empty(cap, np.uint32)
        self._nlen = np.empty(cap, np.uint8)
        self._names = bytearray()
        self._skeys = np.empty(0, np.uint64)
        self._sslots = np.empty(0, np.int32)
        self._recent: dict[int, int] = {}
        self._collide: dict[tuple[int, bytes], int] = {}
        self._dpath: list[str | None] = []
        self._dseed: list[int] = []
        self._dids: dict[str, int] = {}
        self._seeds_in_use: set[int] = set()
        self._dead = 0
        self.size_bytes = 0
        self.entries = 0
        self.dir_id("")

    # ------------------------------------------------------------------ directories
    def dir_id(self, rel: str, create: bool = True) -> int | None:
        """The id of directory ``rel`` ('' is the root), created on first use unless ``create`` is false."""
        d = self._dids.get(rel)
        if d is not None or not create:
            return d
        seed = dir_seed(rel)
        while seed in self._seeds_in_use:  # a directory moved away keeps its seed; a newcomer must not share it
            seed = (seed + _SEED_STEP) & _MASK64
        return self._register_dir(rel, seed)

    def _register_dir(self, rel: str, seed: int) -> int:
        d = len(self._dpath)
        self._dpath.append(rel)
        self._dseed.append(seed)
        self._dids[rel] = d
        self._seeds_in_use.add(seed)
        return d

    def dir_path(self, d: int) -> str | None:
        return self._dpath[d] if 0 <= d < len(self._dpath) else None

    def dir_paths(self) -> list[str]:
        return [p for p in self._dpath if p is not None]

    def _subtree_ids(self, rel: str) -> list[int]:
        if rel == "":
            return [i for i, p in enumerate(self._dpath) if p is not None]
        prefix = rel + "/"
        return [i for i, p in enumerate(self._dpath) if p is not None and (p == rel or p.startswith(prefix))]

    # ------------------------------------------------------------------ lookup
    def _key(self, d: int, nb: bytes) -> int:
        return xxhash.xxh3_64_intdigest(nb, self._dseed[d])

    def _matches(self, s: int, d: int, nb: bytes) -> bool:
        if self._dir[s] != d or self._nlen[s] != len(nb):
            return False
        off = int(self._noff[s])
        return self._names[off : off + len(nb)] == nb

    def find(self, d: int, nb: bytes) -> int:
        """The slot of file ``nb`` in directory ``d``, or -1."""
        if self._collide:
            s = self._collide.get((d, nb))
            if s is not None:
                return s
        key = self._key(d, nb)
        s = self._recent.get(key)
        if s is not None and self._matches(s, d, nb):
            return s
        skeys = self._skeys
        if len(skeys):
            k = np.uint64(key)
            i = int(np.searchsorted(skeys, k))
            n = len(skeys)
            while i < n and skeys[i] == k:
                s = int(self._sslots[i])
                if self._matches(s, d, nb):
                    return s
                i += 1
        return -1

    # ------------------------------------------------------------------ updates
    def _grow(self) -> None:
        cap = max(_MIN_CAPACITY, int(len(self._dir) * _GROWTH))
        for name in ("_dir", "_size", "_acc", "_noff", "_nlen"):
            old = getattr(self, name)
            new = np.empty(cap, old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def upsert(self, d: int, nb: bytes, size: int, access: float | None) -> int:
        """Record file ``nb`` in directory ``d`` with ``size``; returns the change in total bytes.

        ``access`` None keeps a known file's access time (a size change is not a use); a new file gets now.
        A known file's access time only moves forward.
        """
        s = self.find(d, nb)
        if s >= 0:
            delta = size - int(self._size[s])
            self._size[s] = size
            if access is not None and access > self._acc[s]:
                self._acc[s] = access
            self.size_bytes += delta
            return delta
        if len(nb) > 255 or not nb:
            raise ValueError(f"not a file name: {nb!r}")
        if self._n == len(self._dir):
            self._grow()
        s = self._n
        self._n += 1
        self._dir[s] = d
        self._size[s] = size
        self._acc[s] = time.time() if access is None else access
        self._noff[s] = len(self._names)
        self._nlen[s] = len(nb)
        self._names += nb
        self._names += b"\0"
        key = self._key(d, nb)
        other = self._recent.get(key)
        if other is not None and self._dir[other] >= 0:
            self._collide[(d, nb)] = s
        else:
            self._recent[key] = s
        self.size_bytes += size
        self.entries += 1
        if len(self._recent) > max(4096, self.entries >> 4):
            self._merge_recent()
        return size

    def touch(self, d: int, nb: bytes, when: float) -> bool:
        """Mark a known file used at ``when``; False if it is not in the index."""
        s = self.find(d, nb)
        if s < 0:
            return False
        if when > self._acc[s]:
            self._acc[s] = when
        return True

    def remove(self, d: int, nb: bytes) -> int:
        """Forget one file; returns the bytes it counted for (0 if unknown)."""
        s = self.find(d, nb)
        if s < 0:
            return 0
        return self._kill(s, d, nb)

    def _kill(self, s: int, d: int, nb: bytes) -> int:
        size = int(self._size[s])
        key = self._key(d, nb)
        if self._recent.get(key) == s:
            del self._recent[key]
        self._collide.pop((d, nb), None)
        self._dir[s] = -1
        self._dead += 1
        self.size_bytes -= size
        self.entries -= 1
        if self._dead > max(4096, self.entries >> 2):
            self.compact()
        return size

    def remove_dir_tree(self, rel: str) -> tuple[int, int]:
        """Forget directory ``rel`` and everything below it; returns (files, bytes) forgotten."""
        ids = self._subtree_ids(rel)
        if not ids:
            return 0, 0
        files, freed = self._kill_dirs(ids)
        for i in ids:
            p = self._dpath[i]
            if i == 0:
                continue  # the root stays registered even when emptied
            self._dpath[i] = None
            self._dids.pop(p, None)  # type: ignore[arg-type]
            self._seeds_in_use.discard(self._dseed[i])
        return files, freed

    def _kill_dirs(self, ids: list[int]) -> tuple[int, int]:
        n = self._n
        mask = np.isin(self._dir[:n], np.asarray(ids, np.int32))
        files = int(mask.sum())
        if not files:
            return 0, 0
        freed = int(self._size[:n][mask].sum())
        self._dir[:n][mask] = -1
        self._dead += files
        self.size_bytes -= freed
        self.entries -= files
        dead = self._dir
        self._recent = {k: s for k, s in self._recent.items() if dead[s] >= 0}
        self._collide = {k: s for k, s in self._collide.items() if dead[s] >= 0}
        if self._dead > max(4096, self.entries >> 2):
            self.compact()
        return files, freed

    def move_dir_tree(self, src: str, dst: str) -> None:
        """Directory ``src`` was renamed to ``dst`` (both inside the root): rename the subtree.

        Files keep their slots and keys; a directory keeps its seed when it moves.
        """
        if src == dst or src == "":
            return
        if self._dids.get(dst) is not None or any(p.startswith(dst + "/") for p in self._dids):
            self.remove_dir_tree(dst)  # rename(2) only replaces an empty directory; forget whatever we had there
        for i in self._subtree_ids(src):
            old = self._dpath[i]
            assert old is not None
            new = dst + old[len(src) :]
            del self._dids[old]
            self._dpath[i] = new
            self._dids[new] = i

    # ------------------------------------------------------------------ maintenance
    def _merge_recent(self) -> None:
        n_rec = len(self._recent)
        live = self._dir[self._sslots] >= 0 if len(self._sslots) else np.empty(0, bool)
        keys = self._skeys[live]
        slots = self._sslots[live]
        if n_rec:
            rk = np.fromiter(self._recent.keys(), np.uint64, n_rec)
            rs = np.fromiter(self._recent.values(), np.int32, n_rec)
            keys = np.concatenate([keys, rk])
            slots = np.concatenate([slots, rs])
        order = np.argsort(keys, kind="stable")
        self._skeys = keys[order]
        self._sslots = slots[order]
        self._recent = {}

    def compact(self) -> None:
        """Drop dead slots and their names; renumbers slots."""
        self._merge_recent()
        n = self._n
        live = np.flatnonzero(self._dir[:n] >= 0)
        remap = np.full(max(n, 1), -1, np.int32)
        remap[live] = np.arange(len(live), dtype=np.int32)
        offs = self._noff[live].astype(np.int64)
        lens = self._nlen[live].astype(np.int64) + 1
        new_off = np.zeros(len(live), np.int64)
        if len(live):
            np.cumsum(lens[:-1], out=new_off[1:])
        total = int(lens.sum())
        arena = np.frombuffer(self._names, np.uint8)
        idx = np.repeat(offs - new_off, lens) + np.arange(total, dtype=np.int64)
        names = bytearray(arena[idx].tobytes())
        del arena
        cap = max(_MIN_CAPACITY, len(live) + (len(live) >> 4))
        for name in ("_dir", "_size", "_acc", "_nlen"):
            old = getattr(self, name)
            new = np.empty(cap, old.dtype)
            new[: len(live)] = old[live]
            setattr(self, name, new)
        self._noff = np.empty(cap, np.uint32)
        self._noff[: len(live)] = new_off
        self._names = names
        self._n = len(live)
        self._dead = 0
        self._sslots = remap[self._sslots]
        self._collide = {k: int(remap[s]) for k, s in self._collide.items()}

    # ------------------------------------------------------------------ bulk build
    @classmethod
    def from_chunk(cls, chunk: ScanChunk, previous: "FileIndex | None" = None) -> "FileIndex":
        """An index holding exactly what a scan saw.

        Access times already known to ``previous`` (opens seen through events are more
        recent than the atime a relatime mount keeps) are carried over when newer.
        """
        n = len(chunk.sizes)
        self = cls(capacity=n + (n >> 4))
        for rel in chunk.dirs:
            if rel not in self._dids:
                self._register_dir(rel, dir_seed(rel))
        if n:
            dir_ids = np.fromiter((self._dids[r] for r in chunk.dirs), np.int32, len(chunk.dirs))
            counts = np.frombuffer(chunk.counts, np.int64)
            self._dir[:n] = np.repeat(dir_ids, counts)
            self._size[:n] = np.frombuffer(chunk.sizes, np.int64)
            self._acc[:n] = np.frombuffer(chunk.access, np.float64)
            arena = np.frombuffer(chunk.names, np.uint8)
            ends = np.flatnonzero(arena == 0)
            starts = np.empty(n, np.int64)
            starts[0] = 0
            starts[1:] = ends[:-1] + 1
            self._noff[:n] = starts
            self._nlen[:n] = ends - starts
            del arena
            self._names = bytearray(chunk.names)
            keys = np.frombuffer(chunk.keys, np.uint64)
            order = np.argsort(keys, kind="stable")
            self._skeys = keys[order]
            self._sslots = order.astype(np.int32)
            self._n = n
            self.entries = n
            self.size_bytes = int(self._size[:n].sum())
            if previous is not None and previous.entries:
                self._carry_access(previous, keys)
        return self

    def _carry_access(self, previous: "FileIndex", keys: np.ndarray) -> None:
        previous._merge_recent()
        pk, ps = previous._skeys, previous._sslots
        if not len(pk):
            return
        i = np.searchsorted(pk, keys)
        i[i >= len(pk)] = 0
        hit = pk[i] == keys
        old_slots = ps[i[hit]]
        alive = previous._dir[old_slots] >= 0
        mine = np.flatnonzero(hit)[alive]
        self._acc[mine] = np.maximum(self._acc[mine], previous._acc[old_slots[alive]])

    # ------------------------------------------------------------------ reading
    def name_of(self, s: int) -> bytes:
        off = int(self._noff[s])
        return bytes(self._names[off : off + int(self._nlen[s])])

    def rel_path(self, d: int, nb: bytes) -> str:
        dp = self._dpath[d] or ""
        name = nb.decode("utf-8", "surrogateescape")
        return f"{dp}/{name}" if dp else name

    def lru_candidates(self, count: int) -> list[tuple[int, bytes, int, float]]:
        """The ``count`` least recently used files, oldest first: ``(dir_id, name, size, access)``."""
        n = self._n
        k = min(self.entries, int(count))
        if k <= 0:
            return []
        acc = self._acc[:n].copy()
        acc[self._dir[:n] < 0] = np.inf
        if k >= n:
            order = np.argsort(acc, kind="stable")[:k]
        else:
            part = np.argpartition(acc, k - 1)[:k]
            order = part[np.argsort(acc[part], kind="stable")]
        dirs, sizes, accs = self._dir[order].tolist(), self._size[order].tolist(), self._acc[order].tolist()
        return [(d, self.name_of(int(s)), z, a) for s, d, z, a in zip(order.tolist(), dirs, sizes, accs)]

    def iter_files(self, order: str = "lru") -> Iterator[IndexedFile]:
        n = self._n
        live = np.flatnonzero(self._dir[:n] >= 0)
        if order == "lru":
            live = live[np.argsort(self._acc[live], kind="stable")]
        elif order == "size":
            live = live[np.argsort(-self._size[live], kind="stable")]
        for s in live:
            s = int(s)
            yield IndexedFile(self.rel_path(int(self._dir[s]), self.name_of(s)), int(self._size[s]), float(self._acc[s]))

    def get(self, d: int, nb: bytes) -> tuple[int, float] | None:
        """(size, access) of a known file."""
        s = self.find(d, nb)
        return None if s < 0 else (int(self._size[s]), float(self._acc[s]))

    def memory_bytes(self) -> int:
        """Bytes held by the per-file structures (arrays at capacity, names, lookup)."""
        arrays = sum(a.nbytes for a in (self._dir, self._size, self._acc, self._noff, self._nlen, self._skeys, self._sslots))
        # a dict entry with two ints: about 100 bytes; only files added since the last merge are in it
        return arrays + len(self._names) + 100 * (len(self._recent) + len(self._collide))

    def check(self) -> None:
        """Assert internal consistency (tests)."""
        n = self._n
        live = self._dir[:n] >= 0
        assert int(live.sum()) == self.entries, (int(live.sum()), self.entries)
        assert int(self._size[:n][live].sum()) == self.size_bytes
        for s in np.flatnonzero(live):
            s = int(s)
            d = int(self._dir[s])
            assert self._dpath[d] is not None
            assert self.find(d, self.name_of(s)) == s
