"""Worker processes and an exact bound sampler for the multi-process cache tests.

Values carry their own checksum (8-byte xxh3 header), so any reader can tell a
half-written or mixed-up entry from a complete one without the index.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from cachewatch.engine import Cache, CacheBusy

HEADER = 8


def make_value(rng: random.Random, min_size: int, max_size: int) -> bytes:
    n = rng.randint(min_size, max_size)
    payload = rng.randbytes(64) * (n // 64 + 1)
    payload = payload[:n] + rng.randbytes(8)
    return xxhash.xxh3_64_digest(payload) + payload


def value_ok(data: bytes) -> bool:
    return len(data) >= HEADER and xxhash.xxh3_64_digest(data[HEADER:]) == data[:HEADER]


def hammer(root: str, seed: int, n_ops: int, min_size: int, max_size: int, keys: int, cache: Cache | None = None) -> list[str]:
    """A mix of put/read/pin/get/evict; returns a list of problems seen (empty if none)."""
    rng = random.Random(seed)
    own = cache is None
    if cache is None:
        cache = Cache(root)  # the limits stored by the creator
    problems: list[str] = []
    try:
        for _ in range(n_ops):
            key = f"k{rng.randrange(keys)}"
            op = rng.random()
            if op < 0.5:
                try:
                    cache.put(key, make_value(rng, min_size, max_size))
                except CacheBusy:
                    pass
            elif op < 0.75:
                data = cache.read(key)
                if data is not None and not value_ok(data):
                    problems.append(f"read({key}) returned a corrupt value of {len(data)} bytes")
            elif op < 0.9:
                try:
                    with cache.pin(key) as path:
                        st = os.stat(path)
                        first = path.read_bytes()
                        time.sleep(rng.random() * 0.003)
                        if not path.exists():
                            problems.append(f"pinned {key} was deleted under the reader")
                        elif os.stat(path).st_ino == st.st_ino and path.read_bytes() != first:
                            problems.append(f"pinned {key} changed in place")
                        if not value_ok(first):
                            problems.append(f"pinned {key} is corrupt")
                except KeyError:
                    pass
            elif op < 0.97:
                cache.get(key)
            else:
                cache.evict(to=cache.max_bytes // 2)
    except Exception:
        problems.append(traceback.format_exc())
    finally:
        if own:
            cache.close()
    return problems


def hammer_process(root: str, seed: int, n_ops: int, min_size: int, max_size: int, keys: int, out: str) -> None:
    problems = hammer(root, seed, n_ops, min_size, max_size, keys)
    Path(out).write_text("\n".join(problems))


def hammer_inherited(cache: Cache, seed: int, n_ops: int, min_size: int, max_size: int, keys: int, out: str) -> None:
    """Run with a Cache object created in the parent (fork: inherited; spawn: pickled)."""
    problems = hammer(str(cache.root), seed, n_ops, min_size, max_size, keys, cache=cache)
    Path(out).write_text("\n".join(problems))


def writer_forever(root: str, seed: int, min_size: int, max_size: int, keys: int) -> None:
    """Puts until killed (for kill -9 tests)."""
    rng = random.Random(seed)
    cache = Cache(root)
    while True:
        try:
            cache.put(f"k{rng.randrange(keys)}", make_value(rng, min_size, max_size))
        except CacheBusy:
            pass


def on_disk_bytes(root: Path, block: int) -> tuple[int, int]:
    """(bytes charged for every entry, in-flight and replaced file, number of such files).

    A file with two names (the Redis cache links its ``.part`` into place, then unlinks the
    ``.part``) holds its blocks once: each inode is counted once, as the disk counts it."""
    total = files = 0
    seen: set[int] = set()
    meta = root / ".cachewatch"
    dirs = [d for d in root.iterdir() if d.name != ".cachewatch"] + [meta / "tmp", meta / "trash"]
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    continue  # not entry bytes: the Redis cache's reconciler leaves tombstone directories in tmp
                size = e.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            files += 1
            if e.inode() in seen:
                continue
            seen.add(e.inode())
            total += -(-size // block) * block
    return total, files


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return "X"


@dataclass
class FrozenSampler:
    """Stops every worker (SIGSTOP), measures the directory while nothing moves, resumes them.

    A walk of a live directory can count a renamed file twice or miss one; a frozen
    one is exact, so a reading above max is a real violation.
    """

    root: Path
    pids: list[int]
    block: int
    max_bytes: int
    interval_s: float = 0.01
    samples: int = 0
    peak: int = 0
    violations: list[tuple[int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sampling: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "FrozenSampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @contextmanager
    def between_samples(self) -> Iterator[None]:
        """No sample runs inside the block: start (or resume) a process there and add it to
        ``pids`` before the next sample. (Added during a sample, it would run unfrozen while the
        walk goes on, and a walk of a moving directory over-counts.)"""
        with self._sampling:
            yield

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._sampling:
                self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> None:
        live = [p for p in self.pids if _state(p) not in ("X", "Z")]
        for p in live:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        try:
            deadline = time.monotonic() + 5
            while any(_state(p) not in ("T", "t", "X", "Z") for p in live):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.0002)
            else:
                used, _ = on_disk_bytes(self.root, self.block)
                self.samples += 1
                self.peak = max(self.peak, used)
                if used > self.max_bytes:
                    self.violations.append((self.samples, used))
        finally:
            for p in live:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass


def torn_entry_checker(root: str, stop_file: str, out: str) -> None:
    """Until stop_file appears: every entry file visible under the shard directories, and every
    value read through the cache, must be a complete value."""
    problems: list[str] = []
    cache = Cache(root, sweep=False)
    rootp = Path(root)
    checked = 0
    while not os.path.exists(stop_file):
        for shard in list(rootp.iterdir()):
            if shard.name == ".cachewatch":
                continue
            for f in list(shard.iterdir()) if shard.is_dir() else []:
                try:
                    data = f.read_bytes()
                except FileNotFoundError:
                    continue  # evicted meanwhile: fine
                checked += 1
                if not value_ok(data):
                    problems.append(f"torn file visible: {f.name} ({len(data)} bytes)")
        for i in range(20):
            data = cache.read(f"k{i}")
            if data is not None and not value_ok(data):
                problems.append(f"read(k{i}) returned a torn value")
    cache.close()
    Path(out).write_text("\n".join(problems) + ("" if checked else "nothing checked"))


def die_at(root: str, key: str, point: str) -> None:
    """Stop a real put at a chosen step with SIGKILL (the cache's CACHEWATCH_CRASH_AT points)."""
    from cachewatch.engine.cache import cache as cache_mod

    cache_mod._CRASH_AT = f"put_{point}"  # this forked child only
    cache = Cache(root, sweep=False)
    cache.put(key, b"N" * 10_000)
    cache.flush()  # the index steps (before_commit, after_index) run when the batch is committed
    raise AssertionError(f"put went past crash point {point}")
