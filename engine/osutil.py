"""Two small operating-system facts that several parts of the engine rely on."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "pid_alive"]


def fsync_dir(path: str | Path) -> None:
    """Make a rename or link inside ``path`` durable. Best effort: a filesystem that cannot
    fsync a directory (some network ones) is left as it is, the rename itself is still atomic."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts: EPERM means it is there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
