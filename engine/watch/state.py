"""Where a watch keeps its own files: never inside the watched root, which belongs to someone else.

Default: ``$XDG_STATE_HOME/cachewatch/watch/<hash of the resolved root>/`` (``~/.local/state``
when ``XDG_STATE_HOME`` is unset). It holds ``events.jsonl`` (evictions, scans,
alerts, the same format as a managed cache's event log) and ``root.txt`` naming
the watched directory, so a person or the daemon can tell which is which.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import xxhash

from .errors import WatchError

__all__ = ["default_state_dir", "prepare_state_dir", "lock_state_dir", "EVENTS_FILE"]

EVENTS_FILE = "events.jsonl"


def default_state_dir(root: str, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "cachewatch" / "watch" / xxhash.xxh3_64_hexdigest(root.encode("utf-8", "surrogateescape"))


def prepare_state_dir(state_dir: str | os.PathLike, root: str) -> Path:
    """Create the state directory (mode 0700) and check it is outside the watched root."""
    path = Path(os.path.abspath(os.path.expanduser(state_dir)))
    real = os.path.realpath(path)
    if real == root or real.startswith(root.rstrip("/") + "/"):
        raise WatchError(
            f"state directory '{path}' is inside the watched root '{root}'; its files would be counted and evicted. "
            "Give a state directory outside the root"
        )
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker = path / "root.txt"
        if not marker.exists() or marker.read_text(errors="replace").strip() != root:
            tmp = path / f".root.txt.{os.getpid()}"
            tmp.write_text(root + "\n")
            os.replace(tmp, marker)
    except OSError as exc:
        raise WatchError(f"state directory '{path}' cannot be used ({exc.strerror}); give a writable --state-dir") from None
    return path


def lock_state_dir(path: Path, root: str) -> int:
    """Hold ``path/lock`` so two enforcers never run on one root; returns the fd to close on stop."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)
        raise WatchError(
            f"'{root}' is already watched (pid {holder}, state in '{path}'); stop that watch first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
