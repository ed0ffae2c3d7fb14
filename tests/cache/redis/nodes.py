"""Processes of the "nodes" that share one Redis-indexed cache, and the checks after a run.

A node is a set of processes with one node id and one path to Redis (its own TCP proxy where
a test cuts it off). Every worker appends one JSON line per operation to its own log, so a
test can tell, after the fact and for each process, when puts failed, how, and how long a
call took, even for a process that was killed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from cachewatch.engine import Cache
from cachewatch.engine.errors import CacheBusy, CacheError, CacheIndexUnavailable

from ..workers import HEADER, make_value, on_disk_bytes, value_ok

SPAWN = mp.get_context("spawn")  # a fresh interpreter per worker, as separate machines have


# --------------------------------------------------------------------------- worker processes
def _line(log: Any, ev: str, **fields: Any) -> None:
    log.write(json.dumps({"t": time.time(), "pid": os.getpid(), "ev": ev, **fields}) + "\n")


def writer(root: str, opts: dict[str, Any], seed: int, min_size: int, max_size: int, keys: int,
           budget_bytes: int, stop_file: str, log_path: str) -> None:
    """Puts random self-checking values (and reads some back) until ``budget_bytes`` are written
    or ``stop_file`` exists. Every outcome is a line in ``log_path``:

    ok, unavailable (CacheIndexUnavailable), busy (CacheBusy), error (another CacheError),
    crash (anything else), corrupt (a read returned a value whose checksum fails)."""
    rng = random.Random(seed)
    with open(log_path, "a", buffering=1) as log:
        try:
            cache = Cache(root, **opts)
        except Exception as exc:
            _line(log, "open_failed", msg=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())
            return
        _line(log, "opened")
        written = 0
        while written < budget_bytes and not os.path.exists(stop_file):
            key = f"k{rng.randrange(keys)}"
            if rng.random() < 0.2:
                t0 = time.monotonic()
                try:
                    data = cache.read(key)
                except Exception as exc:
                    _line(log, "read_error", msg=f"{type(exc).__name__}: {exc}", dur_s=time.monotonic() - t0)
                    continue
                if data is not None and not value_ok(data):
                    _line(log, "corrupt", key=key, size=len(data))
                continue
            value = make_value(rng, min_size, max_size)
            t0 = time.monotonic()
            ev, msg = "ok", ""
            try:
                cache.put(key, value)
                written += len(value)
            except CacheIndexUnavailable as exc:
                ev, msg = "unavailable", str(exc)
            except CacheBusy as exc:
                ev, msg = "busy", str(exc)
            except CacheError as exc:
                ev, msg = "error", f"{type(exc).__name__}: {exc}"
            except Exception:
                ev, msg = "crash", traceback.format_exc()
            _line(log, ev, key=key, size=len(value), dur_s=round(time.monotonic() - t0, 4), msg=msg)
            if ev != "ok":
                time.sleep(0.05)  # an unreachable index: retry at a human pace, not a hot loop
        try:
            cache.close()
            _line(log, "closed")
        except Exception as exc:
            _line(log, "close_error", msg=f"{type(exc).__name__}: {exc}")
        _line(log, "done", written=written)


STALL_POINTS = ("before-create", "mid-write", "after-link")


def stalled_writer(root: str, opts: dict[str, Any], key: str, size: int, stall_marker: str, log_path: str,
                   point: str = "mid-write") -> None:
    """One put of ``size`` bytes that stops itself (SIGSTOP, the real signal) at ``point``, then
    reports how the put ended once someone sends SIGCONT. The marker file gets the ``.part`` path.

    * ``before-create``: reserved, its ``.part`` not created yet (an audit hook on ``open``);
    * ``mid-write``: half of the first chunk written (``os.write``/``os.pwrite`` wrapped: the
      first write into a file under ``.cachewatch/tmp/`` writes half, stops, writes the rest);
    * ``after-link``: the value complete and linked under its final name, not yet committed
      (``os.unlink`` of the ``.part`` wrapped: it stops just before that unlink).

    The wrappers live in this process only. Every thread stops with it (the lease renewer too),
    exactly as a machine that hangs or a process that is swapped out."""
    assert point in STALL_POINTS, point
    real_write, real_pwrite, real_unlink = os.write, os.pwrite, os.unlink
    armed = [True]

    def stop_here(part: str) -> None:
        armed[0] = False
        Path(stall_marker).write_text(part)
        os.kill(os.getpid(), signal.SIGSTOP)

    def is_part(fd: int) -> str | None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return target if "/.cachewatch/tmp/" in target else None

    def stall_then(fd: int, data: Any, rest: Any, part: str) -> int:
        view = memoryview(data).cast("B")
        half = max(1, view.nbytes // 2)
        done = 0
        while done < half:
            done += real_write(fd, view[done:half]) if rest is None else real_pwrite(fd, view[done:half], rest + done)
        stop_here(part)
        while done < view.nbytes:
            done += real_write(fd, view[done:]) if rest is None else real_pwrite(fd, view[done:], rest + done)
        return done

    def write(fd: int, data: Any) -> int:
        if armed[0] and len(data) > 1 and (part := is_part(fd)):
            return stall_then(fd, data, None, part)
        return real_write(fd, data)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if armed[0] and len(data) > 1 and (part := is_part(fd)):
            return stall_then(fd, data, offset, part)
        return real_pwrite(fd, data, offset)

    def unlink(path: Any, *a: Any, **kw: Any) -> None:
        p = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if armed[0] and "/.cachewatch/tmp/" in p and p.endswith(".part"):
            stop_here(p)
        real_unlink(path, *a, **kw)

    def on_open(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and armed[0] and point == "before-create":
            p = args[0]
            if isinstance(p, (str, bytes)) and "/.cachewatch/tmp/" in os.fsdecode(p) and os.fsdecode(p).endswith(".part"):
                stop_here(os.fsdecode(p))

    if point == "mid-write":
        os.write, os.pwrite = write, pwrite  # type: ignore[assignment]
    elif point == "after-link":
        os.unlink = unlink  # type: ignore[assignment]
    else:
        import sys

        sys.addaudithook(on_open)  # (cannot be removed: ``armed`` turns it off)
    rng = random.Random(size)
    value = make_value(rng, size - HEADER - 8, size - HEADER - 8)
    with open(log_path, "a", buffering=1) as log:
        cache = Cache(root, **opts)
        t0 = time.monotonic()
        try:
            cache.put(key, value)
            _line(log, "ok", key=key, size=len(value), checksum=xxhash.xxh3_64_hexdigest(value), stalled=not armed[0])
        except CacheIndexUnavailable as exc:
            _line(log, "unavailable", msg=str(exc), stalled=not armed[0])
        except CacheError as exc:
            _line(log, "error", cls=type(exc).__name__, msg=str(exc), stalled=not armed[0])
        except Exception:
            _line(log, "crash", msg=traceback.format_exc(), stalled=not armed[0])
        _line(log, "put_returned", dur_s=time.monotonic() - t0)
        # The same process writes again afterwards: a refused writer is not a broken one.
        os.write, os.pwrite, os.unlink = real_write, real_pwrite, real_unlink  # type: ignore[assignment]
        armed[0] = False
        try:
            cache.put(key + "/after", make_value(rng, 1000, 2000))
            _line(log, "after_ok")
        except Exception as exc:
            _line(log, "after_error", msg=f"{type(exc).__name__}: {exc}")
        cache.close()
        _line(log, "done")


def pin_holder(root: str, opts: dict[str, Any], key: str, pinned_marker: str, release_file: str, log_path: str) -> None:
    """Pins ``key`` and holds the pin until ``release_file`` appears, checking every few ms that
    the pinned file is still there, unchanged (same inode, same bytes)."""
    with open(log_path, "a", buffering=1) as log:
        cache = Cache(root, **opts)
        problems: set[str] = set()
        checks = 0
        with cache.pin(key) as path:
            first = Path(path).read_bytes()
            ino = os.stat(path).st_ino
            Path(pinned_marker).write_text(str(path))
            while not os.path.exists(release_file):
                try:
                    if os.stat(path).st_ino != ino or Path(path).read_bytes() != first:
                        problems.add("changed")
                except FileNotFoundError:
                    problems.add("deleted")
                checks += 1
                time.sleep(0.01)
        _line(log, "released", problems=sorted(problems), checks=checks, ok=value_ok(first))
        cache.close()
        _line(log, "done")


# --------------------------------------------------------------------------- reading the logs
@dataclass
class WorkerLog:
    path: Path
    node: str
    lines: list[dict[str, Any]] = field(default_factory=list)

    def load(self) -> "WorkerLog":
        self.lines = []
        if self.path.exists():
            for raw in self.path.read_text().splitlines():
                try:
                    self.lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    pass  # the last line of a process killed mid-write
        return self

    def events(self, *kinds: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [x for x in self.lines if x["ev"] in kinds and x["t"] >= after]

    def bad(self) -> list[dict[str, Any]]:
        """Lines no run may contain: a crash, a corrupt read, a failed open, a read that raised
        (reads work without Redis: they fall back to the files on disk)."""
        return self.events("crash", "corrupt", "open_failed", "read_error")


@dataclass
class Fleet:
    """The worker processes of a run, their node ids and their logs."""

    root: Path
    logs_dir: Path
    stop_file: Path
    procs: list[Any] = field(default_factory=list)
    logs: list[WorkerLog] = field(default_factory=list)

    def start_writer(self, node: str, url: str, seed: int, *, min_size: int, max_size: int, keys: int,
                     budget_bytes: int = 1 << 62, lease_s: float = 1.0, extra: dict[str, Any] | None = None) -> Any:
        log = WorkerLog(self.logs_dir / f"{node}-{seed}.jsonl", node)
        opts = {"index": url, "node": node, "lease_s": lease_s, **(extra or {})}
        p = SPAWN.Process(target=writer, args=(str(self.root), opts, seed, min_size, max_size, keys, budget_bytes,
                                              str(self.stop_file), str(log.path)), daemon=True)
        p.start()
        self.procs.append(p)
        self.logs.append(log)
        return p

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def wait_opened(self, timeout_s: float = 60.0) -> None:
        """Until every live worker has opened its cache (spawning 12 interpreters on 2 cores takes a while)."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [lg for p, lg in zip(self.procs, self.logs) if p.is_alive() and not lg.load().events("opened", "open_failed")]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} workers did not open the cache within {timeout_s:g}s")
            time.sleep(0.05)

    def stop_and_join(self, timeout_s: float = 60.0) -> None:
        self.stop_file.write_text("stop")
        self.join(timeout_s)

    def join(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        hung = [p.pid for p in self.procs if p.is_alive()]
        for p in self.procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.join(5)
        assert not hung, f"workers {hung} did not finish within {timeout_s:g}s (a put or close hung)"
        for lg in self.logs:
            lg.load()

    def ok_bytes(self) -> int:
        """Bytes of every put that succeeded so far, on every writer."""
        return sum(x["size"] for lg in self.logs for x in lg.load().events("ok"))

    def kill_all(self) -> None:
        for p in self.procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.join(5)


# --------------------------------------------------------------------------- checks after a run
def entry_files(root: Path) -> dict[str, Path]:
    """Every entry file under the two-level shard directories, by its path relative to root."""
    out: dict[str, Path] = {}
    for shard in root.iterdir():
        if shard.name == ".cachewatch" or not shard.is_dir():
            continue
        for f in shard.iterdir():
            out[f"{shard.name}/{f.name}"] = f
    return out


def part_files(root: Path) -> list[str]:
    """The in-flight (or left-over) writes: ``.part`` files in ``.cachewatch/tmp`` (not the
    reconciler's tombstone directories, which hold no bytes)."""
    tmp = root / ".cachewatch" / "tmp"
    if not tmp.is_dir():
        return []
    return sorted(e.name for e in os.scandir(tmp) if e.is_file(follow_symlinks=False))


def settle(cache: Cache, timeout_s: float) -> Any:
    """Reconcile until no lease of a dead writer is left (they expire after lease_s), nothing is
    quarantined and no evicted or replaced file waits to be unlinked (``replaced_pinned_bytes``:
    the doomed files of a dead evictor or committer); return the stats then."""
    deadline = time.monotonic() + timeout_s
    while True:
        cache.reconcile()
        s = cache.stats()
        if s.reserved_bytes == 0 and s.quarantined_bytes == 0 and s.replaced_pinned_bytes == 0 and not part_files(cache.root):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {timeout_s:g}s of reconcile: reserved {s.reserved_bytes}, quarantined {s.quarantined_bytes}, "
                f"doomed {s.replaced_pinned_bytes}, .part files {part_files(cache.root)[:5]}"
            )
        time.sleep(0.2)


def assert_index_matches_files(root: Path, cache: Cache, *, settle_s: float = 15.0) -> int:
    """After reconcile: the index and the files agree exactly, and every value is whole.

    Every indexed entry has its file, with the indexed size and checksum; every entry file is
    indexed; no ``.part`` file is left; the counters equal the sum of the entries."""
    s = settle(cache, settle_s)
    entries = cache.entries()
    files = entry_files(root)
    indexed: dict[str, Any] = {}
    for e in entries:
        rel = os.path.relpath(e.path, root)
        assert rel not in indexed, f"two index rows for one file {rel}"
        indexed[rel] = e
    assert set(files) == set(indexed), (
        f"entry files without index rows: {sorted(set(files) - set(indexed))[:5]}; "
        f"index rows without files: {sorted(set(indexed) - set(files))[:5]}; stats then: size {s.size_bytes}, "
        f"entries {s.entries}, reserved {s.reserved_bytes}, quarantined {s.quarantined_bytes}, "
        f"doomed {s.replaced_pinned_bytes}"
    )
    block = s.block_bytes
    charged = 0
    for rel, e in indexed.items():
        data = files[rel].read_bytes()
        assert len(data) == e.size_bytes, f"{rel}: {len(data)} bytes on disk, the index says {e.size_bytes}"
        assert e.checksum is not None and xxhash.xxh3_64_hexdigest(data) == e.checksum, f"{rel}: checksum differs from the index"
        assert value_ok(data), f"{rel}: not a complete value"
        charged += -(-len(data) // block) * block
    assert s.entries == len(files), f"stats says {s.entries} entries, {len(files)} files on disk"
    assert s.size_bytes == charged, f"stats size {s.size_bytes} != the entries' {charged} bytes on disk"
    assert s.size_bytes <= s.max_bytes
    assert part_files(root) == []
    used, _ = on_disk_bytes(root, block)
    assert used == charged, f"{used} bytes on disk, {charged} indexed"
    return len(files)


def evictor_stopped_in_unlink(root: str, opts: dict[str, Any], key: str, size: int, marker: str, log_path: str) -> None:
    """A put into a full cache that stops itself (SIGSTOP) at its eviction's first unlink of an
    entry file: it then holds the eviction lock and its victims' claims, for a test to kill it.

    ``os.unlink`` is wrapped in this process only (the unlink of an evicted file goes through it)."""
    real_unlink = os.unlink
    entries_prefix = os.path.join(os.path.abspath(root), "")
    meta = os.path.join(os.path.abspath(root), ".cachewatch", "")
    armed = [True]

    def unlink(path: Any, *a: Any, **kw: Any) -> None:
        p = os.path.abspath(os.fspath(path))
        if armed[0] and p.startswith(entries_prefix) and not p.startswith(meta):
            armed[0] = False
            Path(marker).write_text(p)
            os.kill(os.getpid(), signal.SIGSTOP)
        real_unlink(path, *a, **kw)

    os.unlink = unlink  # type: ignore[assignment]
    with open(log_path, "a", buffering=1) as log:
        cache = Cache(root, **opts)
        _line(log, "opened")
        try:
            cache.put(key, make_value(random.Random(size), size, size))
            _line(log, "ok", stalled=not armed[0])
        except Exception as exc:
            _line(log, "error", msg=f"{type(exc).__name__}: {exc}", stalled=not armed[0])
        cache.close()


def shard_racer(root: str, opts: dict[str, Any], keys: list[str], barrier: Any, log_path: str) -> None:
    """Puts ``keys[i]`` right after the i-th barrier: every process puts into the same shard,
    one that no entry has used yet, at the same instant (the shard directory is made by a put)."""
    with open(log_path, "a", buffering=1) as log:
        cache = Cache(root, **opts)
        value = make_value(random.Random(len(keys)), 2000, 2000)
        for key in keys:
            barrier.wait(60)
            try:
                cache.put(key, value)
                _line(log, "ok", key=key)
            except Exception as exc:
                _line(log, "error", key=key, msg=f"{type(exc).__name__}: {exc}")
        cache.close()
        _line(log, "done")


def assert_bound_held(sampler: Any, max_bytes: int, note: str = "") -> None:
    """No frozen instant had more bytes on disk than max."""
    assert sampler.violations == [], f"on-disk bytes above max at samples {sampler.violations[:5]}{note}"
    assert sampler.peak <= max_bytes


def wait_until(pred: Any, timeout_s: float, what: str) -> Any:
    """``pred()``'s first true value, polled every 50 ms; fails naming ``what`` after ``timeout_s``."""
    from tests.support.helpers import wait_for

    return wait_for(pred, timeout=timeout_s, interval=0.05, what=what)
