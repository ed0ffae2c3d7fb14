"""Eviction in a directory we do not own: least recently used first, with every safety check.

For each candidate, right before it goes:

1. its directory is reached from the root's file descriptor one component at a time
   with ``O_NOFOLLOW | O_DIRECTORY``, so no symlink is ever followed, whatever was
   swapped in since the scan;
2. ``fstatat(..., AT_SYMLINK_NOFOLLOW)``: it must still be a regular file;
3. it must not have changed (``max(mtime, ctime)``) in the last ``min_age`` seconds;
4. no process may have it open for writing (``/proc`` swept once per pass, see
   :mod:`.openfiles`);
5. the kernel's current path of the directory descriptor (``/proc/self/fd/N``)
   must still be inside the root (a directory moved out of the root after we
   opened it is refused), on the root's filesystem;
6. then ``unlinkat(dirfd, name)``.

What is left is a window of microseconds between check 5 and the unlink, in which
a directory could be moved out of the root or the file opened for writing; no
Linux call closes it for an unlink. Directories are never removed: legacy writers
often create their shard directories once and would fail if they vanished.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from ..cache.types import EvictionReport
from ._scan_worker import DIR_FLAGS
from .openfiles import OpenWriters, find_open_writers
from .scanner import RootIdentity

__all__ = ["Enforcer", "EvictionSource", "PassOutcome", "KEYS_IN_EVENT"]

KEYS_IN_EVENT = 100
# Candidates are fetched in growing batches: the first unlink should not wait for the whole plan.
_FIRST_BATCH = 256
_MAX_BATCH = 8192


class RootChanged(OSError):
    pass


class EvictionSource(Protocol):
    """What the enforcer needs from the watcher's index (each call takes the watcher's lock)."""

    def size_bytes(self) -> int: ...
    def candidates(self, count: int) -> list[tuple[str, bytes, int, float]]: ...
    def after_unlink(self, rel_dir: str, name: bytes, dir_fd: int) -> None: ...


@dataclass(frozen=True)
class PassOutcome:
    report: EvictionReport
    skipped_young: int
    skipped_open: int
    skipped_other: int
    vanished: int
    writers: OpenWriters | None
    first_unlink_time: float | None = None


class Enforcer:
    """Runs eviction passes over one root."""

    def __init__(
        self,
        root: RootIdentity,
        *,
        min_age_s: float,
        writer_pids: Iterable[int] | Callable[[], Iterable[int]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.min_age_s = float(min_age_s)
        self.writer_pids = writer_pids
        self.clock = clock

    # ---------------------------------------------------------------- directory walk
    def _open_root(self) -> int:
        try:
            fd = os.open(self.root.path, DIR_FLAGS)
        except OSError as exc:
            raise RootChanged(exc.errno, f"cannot open the root: {exc.strerror}") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.root.dev, self.root.ino):
            os.close(fd)
            raise RootChanged(0, "the root is no longer the directory being watched")
        return fd

    def _dir_fd(self, root_fd: int, rel: str, cache: dict[str, int]) -> int:
        if rel == "":
            return root_fd
        fd = cache.get(rel)
        if fd is not None:
            return fd
        parent_rel, _, name = rel.rpartition("/")
        parent = self._dir_fd(root_fd, parent_rel, cache)
        if parent < 0 or not _valid_name(name):
            cache[rel] = -1
            return -1
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            if os.fstat(fd).st_dev != self.root.dev:
                os.close(fd)
                fd = -1
        except OSError:
            fd = -1
        cache[rel] = fd
        return fd

    def _inside_root(self, dir_fd: int, root_fd: int) -> bool:
        if dir_fd == root_fd:
            where = os.readlink(f"/proc/self/fd/{dir_fd}")
            return where == self.root.path
        try:
            where = os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            return False
        return where.startswith(self.root.path.rstrip("/") + "/") and not where.endswith(" (deleted)")

    # ---------------------------------------------------------------- a pass
    def run_pass(
        self, source: EvictionSource, goal_bytes: int, reason: str, *, dry_run: bool, stop: threading.Event | None = None
    ) -> PassOutcome:
        """Evict (or with ``dry_run`` list) least recently used files until the index holds ``goal_bytes``.

        ``stop``, once set, ends the pass after the current file.
        """
        t0 = time.perf_counter()
        now = self.clock()
        size_before = source.size_bytes()
        need = size_before - goal_bytes
        files = freed = young = open_ = other = vanished = 0
        progress_bytes = 0  # evicted plus counted files found already gone: what brings the index down
        first_unlink: float | None = None
        keys: list[str] = []
        writers: OpenWriters | None = None
        if need > 0:
            writers = find_open_writers(self.root.path, self.writer_pids)
            root_fd = self._open_root()
            dir_fds: dict[str, int] = {}
            tried: set[tuple[str, bytes]] = set()
            batch_size = _FIRST_BATCH
            try:
                progress = True
                while progress_bytes < need and progress and not (stop is not None and stop.is_set()):
                    progress = False
                    # Files kept back (and, in a dry run, everything seen) stay at the front of the
                    # LRU order, so ask for that many more than the batch.
                    still_indexed = len(tried) if dry_run else young + open_ + other
                    batch = source.candidates(still_indexed + batch_size)
                    batch_size = min(_MAX_BATCH, batch_size * 4)
                    for rel_dir, nb, size, _acc in batch:
                        if progress_bytes >= need or (stop is not None and stop.is_set()):
                            break
                        if (rel_dir, nb) in tried:
                            continue
                        tried.add((rel_dir, nb))
                        progress = True
                        if not _valid_name_b(nb):
                            other += 1
                            continue
                        dfd = self._dir_fd(root_fd, rel_dir, dir_fds)
                        if dfd < 0:
                            other += 1
                            continue
                        try:
                            st = os.stat(nb, dir_fd=dfd, follow_symlinks=False)
                        except FileNotFoundError:
                            vanished += 1
                            progress_bytes += size  # it was counted and is gone: the index drops it
                            if not dry_run:
                                source.after_unlink(rel_dir, nb, dfd)
                            continue
                        except OSError:
                            other += 1
                            continue
                        if not stat.S_ISREG(st.st_mode):
                            other += 1
                            if not dry_run:
                                source.after_unlink(rel_dir, nb, dfd)  # a symlink or directory took its place: stop counting it
                            continue
                        if now - max(st.st_mtime, st.st_ctime) < self.min_age_s:
                            young += 1
                            continue
                        if (st.st_dev, st.st_ino) in writers:
                            open_ += 1
                            continue
                        if not self._inside_root(dfd, root_fd):
                            if dfd == root_fd:
                                raise RootChanged(0, "the root was moved")
                            other += 1
                            os.close(dfd)
                            dir_fds[rel_dir] = -1
                            continue
                        if not dry_run:
                            try:
                                os.unlink(nb, dir_fd=dfd)
                            except FileNotFoundError:
                                vanished += 1
                                progress_bytes += size
                                source.after_unlink(rel_dir, nb, dfd)
                                continue
                            except OSError:
                                other += 1
                                continue
                            source.after_unlink(rel_dir, nb, dfd)
                            if first_unlink is None:
                                first_unlink = time.time()
                        files += 1
                        freed += st.st_size
                        progress_bytes += st.st_size
                        if len(keys) < KEYS_IN_EVENT:
                            name = nb.decode("utf-8", "surrogateescape")
                            keys.append(f"{rel_dir}/{name}" if rel_dir else name)
            finally:
                for fd in dir_fds.values():
                    if fd >= 0:
                        os.close(fd)
                os.close(root_fd)
        report = EvictionReport(
            reason=reason,
            files=files,
            bytes=freed,
            size_before=size_before,
            size_after=max(0, size_before - progress_bytes),
            keys=tuple(keys),
            pinned_skipped=young + open_,
            dry_run=dry_run,
            time=now,
            duration_s=time.perf_counter() - t0,
        )
        return PassOutcome(report, young, open_, other, vanished, writers, first_unlink)


def _valid_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _valid_name_b(nb: bytes) -> bool:
    return bool(nb) and nb not in (b".", b"..") and b"/" not in nb and b"\0" not in nb
