"""The reconciling scan: list and stat every file under the root, shared with worker processes.

Events can be lost (an overflowed inotify queue, directories created before their
watch was added, an observer that was not running), so the index is rebuilt from
a full scan at start and every ``scan_interval``. The scan has to keep pace with
``du -sb`` on hundreds of thousands of files, and per-file Python work is what
costs (a stat call is about the same in C and in Python), so the parent lists the
top of the tree and then hands subtrees, one at a time, to worker processes
(``_scan_worker.py`` started with ``python -I``) while scanning subtrees itself.
The parent never waits for a worker to start, so a small tree is done before any
worker is up and a big one is shared by all. With ``workers=0`` everything runs
in-process.
"""

from __future__ import annotations

import json
import os
import selectors
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ._scan_worker import MAX_UNREADABLE, ScanChunk, Walker, open_root
from .filters import PathFilter

__all__ = ["Scanner", "ScanReport", "RootIdentity", "default_scan_workers", "merge_chunks"]

_WORKER = str(Path(__file__).with_name("_scan_worker.py"))
# Below this many files (as of the previous scan) starting workers costs more than it saves.
_WORKERS_FROM_FILES = 20_000
_FRONTIER_DEPTH = 4


@dataclass(frozen=True)
class RootIdentity:
    """The watched root as opened at start: deletions and scans refuse a root that changed since."""

    path: str  # resolved, absolute
    dev: int
    ino: int


@dataclass(frozen=True)
class ScanReport:
    """What one full scan found and how long it took."""

    files: int
    bytes: int
    dirs: int
    duration_s: float
    workers: int
    vanished: int
    errors: int
    symlinks: int
    other: int
    other_fs: int
    excluded: int
    time: float
    unreadable: tuple[str, ...] = ()  # directories (from the root; "" is the root) that may not be read

    def to_json(self) -> dict:
        out = asdict(self)
        out["unreadable"] = list(self.unreadable)
        return out


def default_scan_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(8, cpus)


def merge_chunks(chunks: list[ScanChunk]) -> ScanChunk:
    out = ScanChunk()
    for c in chunks:
        out.dirs.extend(c.dirs)
        out.counts.extend(c.counts)
        out.names += c.names
        out.sizes.extend(c.sizes)
        out.access.extend(c.access)
        out.keys.extend(c.keys)
        for k, v in c.counters().items():
            setattr(out, k, getattr(out, k) + v)
        out.unreadable.extend(c.unreadable)
    return out


class _Worker:
    """One scan worker process and the subtree it is on."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.current: str | None = None
        self.buf = bytearray()
        self.results = 0

    def give(self, rel: str) -> None:
        self.current = rel
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(rel.encode("utf-8", "surrogateescape") + b"\0")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died; its EOF on stdout hands the subtree back

    def frames(self) -> list[bytes]:
        out = []
        while len(self.buf) >= 8:
            (n,) = struct.unpack_from("<Q", self.buf, 0)
            if len(self.buf) < 8 + n:
                break
            out.append(bytes(self.buf[8 : 8 + n]))
            del self.buf[: 8 + n]
        return out

    def close(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class Scanner:
    """Full scans of one root with one filter. ``workers`` None: one per CPU (up to 8); 0: in-process."""

    def __init__(self, root: RootIdentity, path_filter: PathFilter, use_atime: bool, workers: int | None = None) -> None:
        self.root = root
        self.filter = path_filter
        self.use_atime = use_atime
        self.workers = default_scan_workers() if workers is None else max(0, int(workers))
        self.last_files: int | None = None
        # False: workers do all the subtrees and the parent only hands them out (tests of the worker path).
        self.parent_scans = True

    def _walker(self) -> Walker:
        regexes = None if self.filter.is_trivial else self.filter.regexes()
        return Walker(self.root.dev, self.use_atime, regexes, bool(self.filter.include))

    def _spec(self) -> str:
        return json.dumps(
            {
                "root": self.root.path,
                "dev": self.root.dev,
                "ino": self.root.ino,
                "use_atime": self.use_atime,
                "regexes": None if self.filter.is_trivial else self.filter.regexes(),
                "has_include": bool(self.filter.include),
            }
        )

    def scan(self, on_dir: Callable[[str], None] | None = None) -> tuple[ScanChunk, ScanReport]:
        """Scan the whole root. ``on_dir`` (in-process scans only) is called after each directory."""
        t0 = time.perf_counter()
        root_fd = open_root(self.root.path, self.root.dev, self.root.ino)
        try:
            top = self._walker()
            top.on_dir = on_dir
            use_workers = self.workers >= 1 and on_dir is None and (
                self.last_files is None or self.last_files >= _WORKERS_FROM_FILES
            )
            if not use_workers:
                top.walk(root_fd, "")
                chunk, n_workers = top.chunk, 0
            else:
                frontier = self._expand(top, root_fd)
                chunks, n_workers = self._share(root_fd, top, frontier)
                chunk = merge_chunks([top.chunk, *chunks])
        finally:
            os.close(root_fd)
        self.last_files = len(chunk.sizes)
        report = ScanReport(
            files=len(chunk.sizes),
            bytes=sum(chunk.sizes),
            dirs=len(chunk.dirs),
            duration_s=time.perf_counter() - t0,
            workers=n_workers,
            time=time.time(),
            unreadable=tuple(chunk.unreadable[:MAX_UNREADABLE]),
            **chunk.counters(),
        )
        return chunk, report

    def _expand(self, top: Walker, root_fd: int) -> list[str]:
        """Scan the top levels in-process until there are enough subtrees to share out."""
        frontier = list(top.scan_dir(root_fd, ""))
        depth = 1
        while frontier and len(frontier) < 4 * self.workers and depth < _FRONTIER_DEPTH:
            nxt: list[str] = []
            for rel in frontier:
                fd = top.open_rel(root_fd, rel)
                if fd < 0:
                    continue
                try:
                    nxt.extend(f"{rel}/{n}" for n in top.scan_dir(fd, rel))
                finally:
                    os.close(fd)
            frontier = nxt
            depth += 1
        return sorted(frontier)

    def _share(self, root_fd: int, top: Walker, frontier: list[str]) -> tuple[list[ScanChunk], int]:
        """Hand subtrees out one at a time to worker processes while scanning them here too.

        Returns the workers' chunks and how many workers contributed.
        """
        queue = deque(frontier)
        if len(queue) < 2:
            top.walk_rels(root_fd, list(queue))
            return [], 0
        spec = self._spec()
        workers: list[_Worker] = []
        sel = selectors.DefaultSelector()
        chunks: list[ScanChunk] = []
        used: set[int] = set()
        try:
            for _ in range(min(self.workers, len(queue) - 1)):
                try:
                    p = subprocess.Popen(
                        [sys.executable, "-I", _WORKER, spec],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                    )
                except OSError:
                    break
                w = _Worker(p)
                workers.append(w)
                sel.register(p.stdout, selectors.EVENT_READ, w)  # type: ignore[arg-type]
                w.give(queue.popleft())
            while queue or any(w.current is not None for w in workers):
                parent_busy = bool(queue) and self.parent_scans
                for key, _ in sel.select(timeout=0 if parent_busy else None):
                    w = key.data
                    data = os.read(key.fd, 1 << 20)
                    if not data:  # the worker died: its subtree is scanned here
                        sel.unregister(key.fileobj)
                        if w.current is not None:
                            queue.append(w.current)
                            w.current = None
                        continue
                    w.buf += data
                    for frame in w.frames():
                        try:
                            chunks.append(ScanChunk.from_bytes(frame))
                            used.add(w.proc.pid)
                            w.results += 1
                        except ValueError:
                            if w.current is not None:
                                queue.append(w.current)
                        w.current = None
                        if queue:
                            w.give(queue.popleft())
                if not self.parent_scans:
                    if not any(w.current is not None for w in workers) and queue:
                        raise OSError("no scan worker is running")
                    continue
                if queue:
                    top.walk_rels(root_fd, [queue.popleft()])
                    continue
                # Nothing left to hand out: rather than wait for a worker that has not even
                # started (a small tree, a loaded machine), take its subtree back.
                late = next((w for w in workers if w.current is not None and w.results == 0), None)
                if late is not None:
                    rel, late.current = late.current, None
                    sel.unregister(late.proc.stdout)  # type: ignore[arg-type]
                    late.close(kill=True)
                    top.walk_rels(root_fd, [rel])
        finally:
            sel.close()
            for w in workers:
                w.close()
        return chunks, len(used)

    def scan_subtree(self, rel: str) -> ScanChunk:
        """Scan one directory and everything below it, in-process (a directory touched during a full scan)."""
        root_fd = open_root(self.root.path, self.root.dev, self.root.ino)
        try:
            w = self._walker()
            if rel == "":
                w.walk(root_fd, "")
            else:
                w.walk_rels(root_fd, [rel])
            return w.chunk
        finally:
            os.close(root_fd)
