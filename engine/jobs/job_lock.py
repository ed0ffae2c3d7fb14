"""One job of a kind per cache at a time, across processes (a CLI build and a daemon build).

An ``flock`` on ``.cachewatch/job-<kind>.lock``: the kernel drops it if the holder dies,
so a ``kill -9``'d build never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .base import JobBusy

__all__ = ["exclusive_job"]


@contextmanager
def exclusive_job(meta_dir: Path, kind: str, what: str) -> Iterator[None]:
    path = meta_dir / f"job-{kind}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise JobBusy(f"another {kind} is already running on {what} (pid {holder}); wait for it or cancel it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
