"""What jobs need beyond ``Cache`` that is not the cache's business: hashing files fast.

The cache's layout, ledger inspection, owners' liveness and index surgery used to be
re-implemented here; they now live in :mod:`cachewatch.engine.cache.integrity` behind
``Cache`` methods (``layout``, ``snapshot``, ``writers``, ``stale_files``, ``surgery``).
``cache_paths`` and ``open_index`` remain as thin wrappers for ``jobs/preflight.py``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import xxhash

from ..cache.index import IndexLost, SQLiteIndex
from ..cache.integrity import CacheLayout
from ..cache.locks import ProcessMutex
from ..errors import CacheRootError
from .base import CancelToken

__all__ = ["CachePaths", "cache_paths", "open_index", "hash_file", "HASH_CHUNK_BYTES"]

HASH_CHUNK_BYTES = 4 << 20  # big reads: fewer syscalls, and xxhash drops the GIL for the whole chunk

CachePaths = CacheLayout


def cache_paths(root: str | os.PathLike, *, index_may_be_missing: bool = False) -> CacheLayout:
    """The layout of an existing cache (see :meth:`CacheLayout.existing`)."""
    return CacheLayout.existing(root, index_may_be_missing=index_may_be_missing)


def open_index(paths: CacheLayout) -> SQLiteIndex:
    # Never create a schema here: an empty index over entry files is a lost index, and making it
    # a valid empty one would hand every entry to the orphan sweep (issue 9, item 2).
    try:
        return SQLiteIndex(paths.index_db, ProcessMutex(paths.index_lock), create=False)
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
