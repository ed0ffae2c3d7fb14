"""Looking at a managed cache without changing it (what verify needs beyond ``Cache``).

Opening a :class:`~cachewatch.engine.cache.Cache` reclaims what dead writers left
behind (stale ``.part`` files, reservations) and evicts a cache found over its limit.
That is right for users of the cache and wrong for ``verify`` without ``--repair``: it
must *report* those faults and change nothing. So verify reads the index directly
(the lead's :class:`SQLiteIndex`, same locking) and tests owners' liveness without
removing their token files. ``--repair`` then opens a real ``Cache``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ..cache.cache import META_DIR
from ..cache.index import IndexLost, SQLiteIndex
from ..cache.locks import ProcessMutex
from ..errors import CacheRootError
from .base import CancelToken

__all__ = ["CachePaths", "LedgerSlot", "ledger_slots", "cache_paths", "open_index", "owner_alive_readonly", "hash_file", "HASH_CHUNK_BYTES"]

HASH_CHUNK_BYTES = 4 << 20  # big reads: fewer syscalls, and xxhash drops the GIL for the whole chunk


@dataclass(frozen=True)
class CachePaths:
    root: Path
    meta: Path
    tmp: Path
    owners: Path
    index_db: Path
    lock: Path

    @property
    def trash(self) -> Path:
        """Evicted files waiting to be unlinked by the process that evicted them."""
        return self.meta / "trash"

    @property
    def ledger(self) -> Path:
        return self.meta / "ledger"


@dataclass(frozen=True)
class LedgerSlot:
    """A writer's slot in the cache's shared ledger: what it has reserved and is committing."""

    index: int
    token: str
    reserved_bytes: int
    writes: int
    intent: str


def ledger_slots(paths: CachePaths) -> list[LedgerSlot] | None:
    """The used slots of the ledger, read without changing it; None when there is no readable ledger.

    The ledger class would reset a file of another layout; this reads only a file that
    already has the layout this version knows.
    """
    from ..cache import ledger as ledger_mod

    magic = getattr(ledger_mod, "_MAGIC", None)
    try:
        fd = os.open(paths.ledger, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, len(magic or b""), 0) if magic else b""
    finally:
        os.close(fd)
    if not magic or head != magic:
        return None
    led = ledger_mod.Ledger(paths.ledger)
    try:
        return [LedgerSlot(s.index, s.token, s.reserved_bytes, s.writes, s.intent) for s in led.used()]
    finally:
        led.close()


def cache_paths(root: str | os.PathLike, *, index_may_be_missing: bool = False) -> CachePaths:
    """The cache's layout; :class:`CacheRootError` when ``root`` is not a cachewatch cache.

    With ``index_may_be_missing`` a root that has ``.cachewatch/`` but lost its index is
    accepted (``verify --repair`` rebuilds the index from the files).
    """
    r = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if r.exists() and not r.is_dir():
        raise CacheRootError(f"cache root '{r}' is a file, not a directory; give the cache directory")
    if not r.exists():
        raise CacheRootError(f"cache root '{r}' does not exist; check the path or [cache] root in cachewatch.toml")
    meta = r / META_DIR
    if meta.is_dir() and not (meta / "index.sqlite").is_file() and not index_may_be_missing:
        raise CacheRootError(
            f"cache '{r}' has a {META_DIR}/ but its index is missing; rebuild it with "
            f"`cachewatch verify {r} --repair --max-size SIZE`"
        )
    if not (meta / "index.sqlite").is_file() and not (index_may_be_missing and meta.is_dir()):
        raise CacheRootError(f"'{r}' is not a cachewatch cache (no {META_DIR}/index.sqlite); check the path or [cache] root")
    return CachePaths(r, meta, meta / "tmp", meta / "owners", meta / "index.sqlite", meta / "lock")


def index_lost(paths: CachePaths) -> bool:
    """True when the index is missing, empty (0 bytes), holds no cachewatch schema or is no database."""
    try:
        if os.stat(paths.index_db).st_size == 0:
            return True
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        SQLiteIndex(paths.index_db, ProcessMutex(paths.lock), create=False, readonly=True).close()
    except sqlite3.DatabaseError:  # IndexLost, or not a database at all: repair moves it aside
        return True
    return False


def open_index(paths: CachePaths) -> SQLiteIndex:
    # Never create a schema here: an empty index over entry files is a lost index, and making it
    # a valid empty one would hand every entry to the orphan sweep (issue 9, item 2).
    try:
        return SQLiteIndex(paths.index_db, ProcessMutex(paths.lock), create=False)
    except IndexLost:
        raise CacheRootError(
            f"cache index {paths.index_db} is empty (0 bytes or no cachewatch schema); rebuild it with "
            f"`cachewatch verify {paths.root} --repair --max-size SIZE`"
        ) from None
    except sqlite3.DatabaseError as exc:
        raise CacheRootError(
            f"cache index {paths.index_db} cannot be read ({exc}); move it aside and run "
            f"`cachewatch verify {paths.root} --repair --max-size SIZE` to re-index the files"
        ) from None


def owner_alive_readonly(owners_dir: Path, token: str | None) -> bool:
    """Like the cache's ``owner_alive`` but leaves a dead owner's token file in place."""
    if not token:
        return False
    try:
        fd = os.open(owners_dir / f"{token}.lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume alive, never report a live writer's file as stale
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as exc:
        return exc.errno != errno.ENOLCK
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def hash_file(path: Path, buf: bytearray, token: CancelToken | None = None, on_bytes=None) -> tuple[int, int, str]:
    """``(inode, bytes read, xxh3_64 hex)`` of a file, read in chunks into ``buf``.

    Raises ``FileNotFoundError`` (gone) and other ``OSError`` (unreadable) to the caller.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    try:
        ino = os.fstat(fd).st_ino
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):
            pass
        h = xxhash.xxh3_64()
        view = memoryview(buf)
        total = 0
        with open(fd, "rb", buffering=0, closefd=False) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
                total += n
                if on_bytes is not None:
                    on_bytes(n)
                if token is not None:
                    token.raise_if_cancelled()
        return ino, total, h.hexdigest()
    finally:
        os.close(fd)
