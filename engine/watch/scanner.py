"""The reconciling scan: list and stat every file under the root, in parallel processes.

Events can be lost (an overflowed inotify queue, directories created before their
watch was added, an observer that was not running), so the index is rebuilt from
a full scan at start and every ``scan_interval``. The scan has to keep pace with
``du -sb`` on hundreds of thousands of files: the parent lists the top of the tree,
then hands whole subtrees to worker processes (``_scan_worker.py``, started with
``python -I``) that stat in parallel and send back flat arrays. Small trees, or
a machine with one CPU, are scanned in-process with the same code.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ._scan_worker import ScanChunk, Walker, open_root
from .filters import PathFilter

__all__ = ["Scanner", "ScanReport", "RootIdentity", "default_scan_workers"]

_WORKER = str(Path(__file__).with_name("_scan_worker.py"))
# Below this many files (as of the previous scan) worker start-up costs more than it saves.
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

    def to_json(self) -> dict:
        return asdict(self)


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
    return out


class Scanner:
    """Full scans of one root with one filter. ``workers`` None: one per CPU (up to 8); 0: in-process."""

    def __init__(self, root: RootIdentity, path_filter: PathFilter, use_atime: bool, workers: int | None = None) -> None:
        self.root = root
        self.filter = path_filter
        self.use_atime = use_atime
        self.workers = default_scan_workers() if workers is None else max(0, int(workers))
        self.last_files: int | None = None

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
            use_workers = self.workers >= 2 and on_dir is None and (
                self.last_files is None or self.last_files >= _WORKERS_FROM_FILES
            )
            if not use_workers:
                top.walk(root_fd, "")
                chunk, n_workers = top.chunk, 0
            else:
                frontier = self._expand(top, root_fd)
                if len(frontier) < 2:
                    top.walk_rels(root_fd, frontier)
                    chunk, n_workers = top.chunk, 0
                else:
                    shares = [frontier[i :: self.workers] for i in range(min(self.workers, len(frontier)))]
                    chunks = self._run_workers(root_fd, shares)
                    chunk, n_workers = merge_chunks([top.chunk, *chunks]), len(shares)
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
            **chunk.counters(),
        )
        return chunk, report

    def _expand(self, top: Walker, root_fd: int) -> list[str]:
        """Scan the top levels in-process until there are enough subtrees to share out."""
        frontier = [n for n in top.scan_dir(root_fd, "")]
        depth = 1
        while frontier and len(frontier) < 2 * self.workers and depth < _FRONTIER_DEPTH:
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

    def _run_workers(self, root_fd: int, shares: list[list[str]]) -> list[ScanChunk]:
        spec = self._spec()
        procs: list[tuple[subprocess.Popen, list[str]]] = []
        failed: list[list[str]] = []
        for share in shares:
            try:
                p = subprocess.Popen(
                    [sys.executable, "-I", _WORKER, spec],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    close_fds=True,
                )
            except OSError:
                failed.append(share)
                continue
            procs.append((p, share))
        outs: dict[int, bytearray] = {}
        sel = selectors.DefaultSelector()
        try:
            for p, share in procs:
                try:
                    assert p.stdin is not None
                    p.stdin.write("\0".join(share).encode("utf-8", "surrogateescape"))
                    p.stdin.close()
                except OSError:
                    pass
                outs[p.pid] = bytearray()
                sel.register(p.stdout, selectors.EVENT_READ, (p.pid, "out"))  # type: ignore[arg-type]
                sel.register(p.stderr, selectors.EVENT_READ, (p.pid, "err"))  # type: ignore[arg-type]
            open_streams = 2 * len(procs)
            errs: dict[int, bytearray] = {p.pid: bytearray() for p, _ in procs}
            while open_streams:
                for key, _ in sel.select():
                    pid, which = key.data
                    data = os.read(key.fd, 1 << 20)
                    if not data:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                        continue
                    (outs if which == "out" else errs)[pid] += data
        finally:
            sel.close()
        chunks: list[ScanChunk] = []
        for p, share in procs:
            rc = p.wait()
            p.stdout.close()  # type: ignore[union-attr]
            p.stderr.close()  # type: ignore[union-attr]
            try:
                if rc != 0:
                    raise ValueError(f"scan worker exited with {rc}")
                chunks.append(ScanChunk.from_bytes(bytes(outs[p.pid])))
            except ValueError:
                failed.append(share)
        for share in failed:  # a worker that could not run: do its part here
            w = self._walker()
            w.walk_rels(root_fd, share)
            chunks.append(w.chunk)
        return chunks

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
