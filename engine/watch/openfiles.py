"""Files under the root that some process still has open for writing.

A file being written must never be evicted. Writes move the mtime (``min_age``
covers that), but a writer may hold a file open and idle, so before each eviction
pass the enforcer sweeps ``/proc``: for each process, its open descriptors (a
``readlink`` each; only links under the root are looked at further, and the link's
own mode says whether it was opened for writing) and its shared writable memory
maps. About 5 ms for a hundred processes.

What this cannot see, and is documented: processes of other users when not root
(their ``/proc/<pid>/fd`` is unreadable; counted in ``denied``), processes in
other PID namespaces (containers) or on other machines (NFS), and a file opened
for writing between this sweep and the unlink (``min_age`` is the guard there).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["OpenWriters", "find_open_writers", "process_tree"]


@dataclass(frozen=True)
class OpenWriters:
    inodes: frozenset[tuple[int, int]]  # (st_dev, st_ino) open for writing
    processes: int
    denied: int
    duration_s: float

    def __contains__(self, dev_ino: object) -> bool:
        return dev_ino in self.inodes


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants (e.g. a training and its DataLoader workers)."""
    import psutil

    try:
        p = psutil.Process(root_pid)
        return [root_pid, *(c.pid for c in p.children(recursive=True))]
    except psutil.Error:
        return []


def find_open_writers(root: str, pids: Iterable[int] | Callable[[], Iterable[int]] | None = None) -> OpenWriters:
    """The files under ``root`` (a resolved path) open for writing by ``pids`` (default: every process)."""
    t0 = time.perf_counter()
    if callable(pids):
        pids = pids()
    pid_list = _all_pids() if pids is None else list(pids)
    prefix = root.rstrip("/") + "/"
    prefix_b = os.fsencode(prefix)
    found: set[tuple[int, int]] = set()
    seen = denied = 0
    for pid in pid_list:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            denied += 1
            continue
        except OSError:
            continue  # exited
        seen += 1
        for fd in fds:
            link = f"{fd_dir}/{fd}"
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if not target.startswith(prefix):
                continue
            try:
                # The magic link's own permission bits mirror the open mode: write bit = opened for writing.
                if not os.lstat(link).st_mode & stat.S_IWUSR:
                    continue
                st = os.stat(link)
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
        try:
            with open(f"/proc/{pid}/maps", "rb") as fh:
                maps = fh.read()
        except OSError:
            continue
        if prefix_b not in maps:
            continue
        for line in maps.splitlines():
            parts = line.split(None, 5)
            if len(parts) < 6 or not parts[5].startswith(prefix_b):
                continue
            perms = parts[1]
            if perms[1:2] == b"w" and perms[3:4] == b"s":  # shared writable: writes reach the file
                try:
                    st = os.stat(parts[5])
                except OSError:
                    continue
                found.add((st.st_dev, st.st_ino))
    return OpenWriters(frozenset(found), seen, denied, time.perf_counter() - t0)
