"""The inner loop of the reconciling scan, runnable in a separate process.

This module imports nothing from cachewatch on purpose: the scanner starts it as
``python -I _scan_worker.py`` so several processes can stat different subtrees in
parallel (the GIL keeps threads from overlapping the per-file Python work, and a
start-up scan has to keep pace with ``du -sb``, which is C). The same code runs
in-process for small trees and when worker processes cannot be started.

Per file it keeps only what the index needs, in flat arrays: the name (a
NUL-separated blob), the apparent size, the access time and a 64-bit key
``xxh3_64(name, seed=xxh3_64(directory))``. Directories are opened relative to
their parent with ``O_NOFOLLOW``, so a symlink (or a directory swapped for one
mid-scan) is never entered, and other filesystems mounted inside the root are
skipped, like ``du -x``.
"""

from __future__ import annotations

import array
import json
import os
import stat
import struct
import sys

from functools import partial
from itertools import repeat
from operator import attrgetter

import xxhash

MAGIC = b"CWS1"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MODE = attrgetter("st_mode")
_SIZE = attrgetter("st_size")
_ATIME = attrgetter("st_atime")
_MTIME = attrgetter("st_mtime")


_COUNTERS = ("vanished", "errors", "symlinks", "other", "other_fs", "excluded")
# Directories the scan may not read (EACCES), by relative path ("" is the root): their files
# count as 0 B, which the watch must say. Bounded: a tree of a million such is one message.
MAX_UNREADABLE = 100


def encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def dir_seed(rel: str) -> int:
    return xxhash.xxh3_64_intdigest(encode_name(rel))


class ScanChunk:
    """What one scanner (process or thread) saw: directories in visit order and their files."""

    def __init__(self) -> None:
        self.dirs: list[str] = []
        self.counts = array.array("q")
        self.names = bytearray()
        self.sizes = array.array("q")
        self.access = array.array("d")
        self.keys = array.array("Q")
        self.vanished = self.errors = self.symlinks = self.other = self.other_fs = self.excluded = 0
        self.unreadable: list[str] = []

    def denied(self, rel: str) -> None:
        self.errors += 1
        if len(self.unreadable) < MAX_UNREADABLE:
            self.unreadable.append(rel)

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _COUNTERS}

    def to_bytes(self) -> bytes:
        dirs = "\0".join(self.dirs).encode("utf-8", "surrogateescape")
        parts = [
            dirs,
            self.counts.tobytes(),
            bytes(self.names),
            self.sizes.tobytes(),
            self.access.tobytes(),
            self.keys.tobytes(),
            json.dumps({**self.counters(), "unreadable": self.unreadable}).encode(),
        ]
        out = [MAGIC]
        for p in parts:
            out.append(struct.pack("<Q", len(p)))
            out.append(p)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ScanChunk":
        if data[:4] != MAGIC:
            raise ValueError("not a scan chunk")
        pos = 4
        parts = []
        for _ in range(7):
            (n,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            parts.append(data[pos : pos + n])
            pos += n
        self = cls()
        dirs = parts[0].decode("utf-8", "surrogateescape")
        self.counts.frombytes(parts[1])
        self.dirs = dirs.split("\0") if self.counts else []
        self.names = bytearray(parts[2])
        self.sizes.frombytes(parts[3])
        self.access.frombytes(parts[4])
        self.keys.frombytes(parts[5])
        for k, v in json.loads(parts[6]).items():
            if k == "unreadable":
                self.unreadable = [str(x) for x in v]
            else:
                setattr(self, k, int(v))
        return self


class Walker:
    """Lists and stats directories into a :class:`ScanChunk`."""

    def __init__(self, root_dev: int, use_atime: bool, regexes: tuple | None = None, has_include: bool = False) -> None:
        self.root_dev = root_dev
        self.use_atime = use_atime
        self.chunk = ScanChunk()
        self.has_include = has_include
        # Called with each directory's relative path after it is listed (progress, tests).
        self.on_dir = None
        # fchdir into each directory: only in a worker process, where nothing else uses the cwd.
        self.chdir = False
        if regexes:
            import re  # only filtered scans pay for it

            (inc_n, inc_p), (exc_n, exc_p) = regexes
            c = lambda r: re.compile(r, re.DOTALL).fullmatch if r else None  # noqa: E731
            self.inc_name, self.inc_path, self.exc_name, self.exc_path = c(inc_n), c(inc_p), c(exc_n), c(exc_p)
            self.filtered = True
        else:
            self.inc_name = self.inc_path = self.exc_name = self.exc_path = None
            self.filtered = False

    def _counts(self, rel: str, name: str) -> bool:
        path = rel + "/" + name if rel else name
        if self.has_include:
            if not ((self.inc_name and self.inc_name(name)) or (self.inc_path and self.inc_path(path))):
                return False
        if self.exc_name and self.exc_name(name):
            return False
        if self.exc_path and self.exc_path(path):
            return False
        return True

    def scan_dir(self, fd: int, rel: str) -> list[str]:
        """Record the regular files of one open directory; return its subdirectory names."""
        c = self.chunk
        try:
            if self.chdir:
                # In a worker process (one thread) the cheapest stat is a bare lstat of a bytes
                # name relative to the working directory: no keyword dict, no name encoding.
                os.fchdir(fd)
                names = os.listdir(b".")
            else:
                names = list(map(str.encode, os.listdir(fd), repeat("utf-8"), repeat("surrogateescape")))
        except PermissionError:
            c.denied(rel)
            return []
        except OSError:
            c.errors += 1
            return []
        seed = xxhash.xxh3_64_intdigest(rel.encode("utf-8", "surrogateescape"))
        # The common case (a directory of regular files, nothing vanishing under us, no
        # filter) runs as C-level map() loops: per-file bytecode is what makes a Python
        # scan slower than du, not the stat calls.
        try:
            if self.chdir:
                sts = list(map(os.lstat, names))
            else:
                sts = list(map(partial(os.stat, dir_fd=fd, follow_symlinks=False), names))
        except OSError:
            return self._scan_dir_slow(fd, rel, names, seed)
        if self.filtered or not all(map(stat.S_ISREG, map(_MODE, sts))):
            return self._scan_dir_slow(fd, rel, names, seed, sts)
        self._record(rel, names, sts, seed)
        return []

    def _record(self, rel: str, names: list[bytes], sts: list, seed: int) -> None:
        c = self.chunk
        c.sizes.extend(map(_SIZE, sts))
        if self.use_atime:
            c.access.extend(map(max, map(_ATIME, sts), map(_MTIME, sts)))
        else:
            c.access.extend(map(_MTIME, sts))
        c.keys.extend(map(xxhash.xxh3_64_intdigest, names, repeat(seed)))
        c.dirs.append(rel)
        c.counts.append(len(names))
        if names:
            c.names += b"\0".join(names)
            c.names += b"\0"

    def _scan_dir_slow(self, fd: int, rel: str, names: list[bytes], seed: int, sts: list | None = None) -> list[str]:
        c = self.chunk
        isreg, isdir, islnk = stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK
        kept: list[bytes] = []
        kept_st: list = []
        subdirs: list[str] = []
        for i, nb in enumerate(names):
            if sts is not None:
                st = sts[i]
            else:
                try:
                    st = os.stat(nb, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    c.vanished += 1
                    continue
                except OSError:
                    c.errors += 1
                    continue
            mode = st.st_mode
            if isreg(mode):
                if self.filtered and not self._counts(rel, nb.decode("utf-8", "surrogateescape")):
                    c.excluded += 1
                    continue
                kept.append(nb)
                kept_st.append(st)
            elif isdir(mode):
                if st.st_dev != self.root_dev:
                    c.other_fs += 1
                else:
                    subdirs.append(nb.decode("utf-8", "surrogateescape"))
            elif islnk(mode):
                c.symlinks += 1
            else:
                c.other += 1
        self._record(rel, kept, kept_st, seed)
        return subdirs

    def open_child(self, parent_fd: int, name: str, rel: str = "") -> int:
        """An fd for a subdirectory, never through a symlink and never onto another filesystem; -1 if gone.

        ``rel``: the subdirectory's path from the root, recorded if it may not be read.
        """
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            self.chunk.vanished += 1
            return -1
        except PermissionError:
            self.chunk.denied(rel or name)
            return -1
        except OSError:  # ELOOP: swapped for a symlink; ENOTDIR: swapped for a file; EACCES
            self.chunk.errors += 1
            return -1
        try:
            if os.fstat(fd).st_dev != self.root_dev:
                self.chunk.other_fs += 1
                os.close(fd)
                return -1
        except OSError:
            os.close(fd)
            return -1
        return fd

    def open_rel(self, root_fd: int, rel: str) -> int:
        """Walk ``rel`` from the root one component at a time (no symlink anywhere on the way)."""
        fd = os.dup(root_fd)
        parts = rel.split("/")
        for i, part in enumerate(parts):
            child = self.open_child(fd, part, "/".join(parts[: i + 1]))
            os.close(fd)
            if child < 0:
                return -1
            fd = child
        return fd

    def walk(self, fd: int, rel: str) -> None:
        """Scan the directory ``fd`` (named ``rel``) and everything below it. Does not close ``fd``."""
        # Only the chain of ancestors is open at any time, so a directory with many
        # subdirectories cannot exhaust file descriptors.
        stack = [(fd, rel, iter(self.scan_dir(fd, rel)))]
        try:
            while stack:
                dfd, drel, it = stack[-1]
                name = next(it, None)
                if name is None:
                    stack.pop()
                    if dfd != fd:
                        os.close(dfd)
                    continue
                crel = drel + "/" + name if drel else name
                cfd = self.open_child(dfd, name, crel)
                if cfd < 0:
                    continue
                stack.append((cfd, crel, iter(())))
                stack[-1] = (cfd, crel, iter(self.scan_dir(cfd, crel)))
                if self.on_dir is not None:
                    self.on_dir(crel)
        finally:
            for dfd, _, _ in stack:
                if dfd != fd:
                    os.close(dfd)

    def walk_rels(self, root_fd: int, rels: list[str]) -> None:
        for rel in rels:
            fd = self.open_rel(root_fd, rel)
            if fd < 0:
                continue
            try:
                self.walk(fd, rel)
            finally:
                os.close(fd)


def open_root(path: str, dev: int, ino: int) -> int:
    fd = os.open(path, DIR_FLAGS)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino):
        os.close(fd)
        raise OSError(f"{path} is no longer the directory being watched")
    return fd


def main() -> int:
    """Scan the subtrees named on stdin (NUL-terminated), one length-prefixed chunk per subtree on stdout.

    Subtrees come one at a time as the parent hands them out, so a fast worker takes more.
    """
    spec = json.loads(sys.argv[1])
    root_fd = open_root(spec["root"], spec["dev"], spec["ino"])
    out = sys.stdout.buffer
    pending = b""
    while True:
        data = os.read(0, 1 << 16)
        if not data:
            break
        pending += data
        while b"\0" in pending:
            raw, pending = pending.split(b"\0", 1)
            w = Walker(spec["dev"], spec["use_atime"], spec.get("regexes"), spec.get("has_include", False))
            w.chdir = True
            w.walk_rels(root_fd, [raw.decode("utf-8", "surrogateescape")])
            frame = w.chunk.to_bytes()
            out.write(struct.pack("<Q", len(frame)) + frame)
            out.flush()
    os.close(root_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
