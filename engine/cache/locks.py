"""File locks the cache is built on, and why each one is an ``flock``.

* :class:`ProcessMutex` serialises the short write sections (reserve, commit,
  evict) of every process on one root. A blocked ``flock`` waiter is woken as soon
  as the holder releases, where SQLite's own busy handler sleeps 1, 2, 5, 10 ms...
  and collapses throughput with a dozen writers.
* Each open cache holds an exclusive ``flock`` on ``owners/<token>.lock``. Rows it
  reserves carry the token; when the process dies, the kernel drops the lock and
  any other process can prove the owner dead with one non-blocking ``flock``,
  whatever became of the pid (reuse cannot fool it).
* Pins are shared ``flock``\\ s on the entry file itself, so they too vanish with
  their process, cost no index write, and the evictor tests them with one
  non-blocking exclusive ``flock`` just before it unlinks.

``flock`` locks belong to an open file description, which a forked child shares
with its parent; everything here reopens its descriptors after a fork.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import threading
import time
from pathlib import Path

__all__ = ["ProcessMutex", "OwnerLock", "owner_alive", "try_exclusive", "new_token", "FORKS"]

# How many forks this process descends from (one more in each child, counted by an at-fork hook
# that runs before any other code in the child). The hot path compares it instead of calling
# getpid(2) each time (glibc does not cache the pid): one system call less per lock hold.
FORKS = [0]


def _count_fork() -> None:
    FORKS[0] += 1


os.register_at_fork(after_in_child=_count_fork)


def new_token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(6)}"


class ProcessMutex:
    """Mutual exclusion across threads and processes on one lock file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._fd = -1
        self._pid = -1
        self._forks = -1  # FORKS when _fd was opened: another value means a forked child
        self._depth = 0
        # Set to a list to record how long each outermost hold lasted (ns); the benchmark's
        # "mutex hold per put". None (the default) costs one comparison per release.
        self.hold_ns: list[int] | None = None
        self._t_acquired = 0

    def _ensure_fd(self) -> int:
        if self._forks != FORKS[0]:
            # After a fork the inherited descriptor shares the parent's lock state: drop it.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._pid = os.getpid()
            self._forks = FORKS[0]
            self._depth = 0
        return self._fd

    def __enter__(self) -> "ProcessMutex":
        self._thread_lock.acquire()
        try:
            fd = self._ensure_fd()
            if self._depth == 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if self.hold_ns is not None:
                    self._t_acquired = time.perf_counter_ns()
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._depth -= 1
            if self._depth == 0:
                if self.hold_ns is not None:
                    self.hold_ns.append(time.perf_counter_ns() - self._t_acquired)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def reset_after_fork(self) -> None:
        self._thread_lock = threading.RLock()
        if self._fd >= 0 and self._pid != os.getpid():
            try:
                os.close(self._fd)  # the parent's descriptor: closing our copy leaves its lock alone
            except OSError:
                pass
            self._fd = -1
        self._pid = -1
        self._forks = -1
        self._depth = 0

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._pid, self._forks = -1, -1, -1


class OwnerLock:
    """The liveness token of one open cache in one process."""

    def __init__(self, owners_dir: Path) -> None:
        """Make a new token file and lock it, without any cache lock held.

        Another process asking :func:`owner_alive` about every token file (a start-up recovery)
        may find ours between its creation and our ``flock``, take it as a dead owner's and
        remove it. So the lock counts only once the name still leads to the locked file:
        whoever removes a token file does so holding its lock, which nobody can take from us
        after that check. Otherwise the next token is tried.
        """
        self.dir = owners_dir
        for _attempt in range(16):
            self.token = new_token()
            self.path = owners_dir / f"{self.token}.lock"
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st = os.fstat(fd)
                now = os.stat(self.path)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    break
            except (BlockingIOError, FileNotFoundError):
                pass  # taken for a dead owner's: it is being (or has been) removed
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        else:  # pragma: no cover - removed 16 times in a row
            raise OSError(errno.EAGAIN, f"could not keep a liveness token file in {owners_dir}")
        self._fd = fd
        self._pid = os.getpid()

    def release(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self._fd)
        self._fd = -1


def lock_held(path: str | os.PathLike, *, remove_if_free: bool = False) -> bool:
    """True while some process holds an flock on the file at ``path`` (False when there is no such file).

    With ``remove_if_free`` a file nobody holds is removed, under the lock, so that a process
    which takes it afterwards never sees a stale one.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError as exc:  # pragma: no cover - filesystems without flock
            return exc.errno not in (errno.ENOLCK,)
        if remove_if_free:  # we got it: the holder is gone
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return False
    finally:
        os.close(fd)  # also drops the lock we may have taken


def owner_alive(owners_dir: Path, token: str | None) -> bool:
    """True while the process that holds ``token`` is running; a dead owner's token file is removed."""
    if not token:
        return False
    return lock_held(owners_dir / f"{token}.lock", remove_if_free=True)


def try_exclusive(fd: int) -> bool:
    """Take an exclusive lock without waiting; False when someone holds a pin (shared lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
