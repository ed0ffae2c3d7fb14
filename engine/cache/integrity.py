"""The cache's integrity API: its layout, ledger inspection, liveness, and index surgery.

One owner for the cache's invariants (issue 11, item 4). ``jobs/verify.py`` scans, hashes
and reports; everything that knows how ``.cachewatch/`` is laid out, how the ledger is
encoded, how a dead owner is proven dead, or how rows and counters must change together
lives here, behind :meth:`Cache.layout`, :meth:`Cache.snapshot`, :meth:`Cache.writers`,
:meth:`Cache.stale_files` and :meth:`Cache.surgery`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CacheRootError
from .index import LIVE, REPLACED, Counters, Row

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["CacheLayout", "IndexSnapshot", "WriterSlot", "IndexSurgery", "owner_alive_readonly"]

META_DIR = ".cachewatch"


@dataclass(frozen=True)
class CacheLayout:
    """Where a cache keeps what (see docs/cache.md, "On disk")."""

    root: Path
    meta: Path
    tmp: Path
    owners: Path
    trash: Path
    index_db: Path
    lock: Path  # the reservation mutex (ledger, eviction)
    ledger: Path
    index_lock: Path  # serialises index writes

    @classmethod
    def of(cls, root: str | os.PathLike) -> "CacheLayout":
        r = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        meta = r / META_DIR
        return cls(r, meta, meta / "tmp", meta / "owners", meta / "trash", meta / "index.sqlite", meta / "lock", meta / "ledger", meta / "index.lock")

    @classmethod
    def existing(cls, root: str | os.PathLike, *, index_may_be_missing: bool = False) -> "CacheLayout":
        """The layout of an existing cache; :class:`CacheRootError` (one line, with the fix) otherwise."""
        lay = cls.of(root)
        r = lay.root
        if r.exists() and not r.is_dir():
            raise CacheRootError(f"cache root '{r}' is a file, not a directory; give the cache directory")
        if not r.exists():
            raise CacheRootError(f"cache root '{r}' does not exist; check the path or [cache] root in cachewatch.toml")
        if lay.meta.is_dir() and not lay.has_index() and not index_may_be_missing:
            raise CacheRootError(
                f"cache '{r}' has a {META_DIR}/ but its index is missing; rebuild it with "
                f"`cachewatch verify {r} --repair --max-size SIZE`"
            )
        if not lay.has_index() and not (index_may_be_missing and lay.meta.is_dir()):
            raise CacheRootError(f"'{r}' is not a cachewatch cache (no {META_DIR}/index.sqlite); check the path or [cache] root")
        return lay

    @property
    def redis_marker(self) -> Path:
        """Present when the root's index lives in Redis (engine/cache/redis_cache.py)."""
        return self.meta / "redis.json"

    def has_index(self) -> bool:
        """An index file, or a marker naming the Redis that holds the index."""
        return self.index_db.is_file() or self.redis_marker.is_file()

    def index_unusable(self) -> bool:
        """True when the index is missing, empty (0 bytes), holds no cachewatch schema or is no database
        (for a Redis-indexed root: when Redis holds nothing for it)."""
        if self.redis_marker.is_file():
            from .redis_cache import RedisCache

            return RedisCache.index_missing(self.root)
        import sqlite3

        from .index import SQLiteIndex
        from .locks import ProcessMutex

        try:
            if os.stat(self.index_db).st_size == 0:
                return True
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:
            SQLiteIndex(self.index_db, ProcessMutex(self.index_lock), create=False, readonly=True).close()
        except sqlite3.DatabaseError:  # IndexLost, or not a database at all
            return True
        return False


@dataclass(frozen=True)
class WriterSlot:
    """A writer's ledger slot: what it has reserved and which file it was renaming."""

    index: int
    token: str
    reserved_bytes: int
    writes: int
    intent: str
    alive: bool

    @property
    def stale(self) -> bool:
        """A dead writer's slot that still holds something recovery would settle."""
        return not self.alive and bool(self.reserved_bytes or self.writes or self.intent)


@dataclass(frozen=True)
class IndexSnapshot:
    """Every row and the counters, read in one go (not a transaction: a scan's starting point)."""

    live: tuple[Row, ...]
    writing: tuple[Row, ...]
    replaced: tuple[Row, ...]
    counters: Counters
    block_bytes: int
    max_bytes: int | None

    def row_sums(self) -> dict[str, int]:
        return _sums(self.live, self.writing, self.replaced)

    def counter_differences(self) -> list[str]:
        return _diff(self.counters, self.row_sums())


def _sums(live: Any, writing: Any, replaced: Any) -> dict[str, int]:
    live = list(live)
    writing = list(writing)
    return {
        "live_bytes": sum(r.charge for r in live),
        "live_data_bytes": sum(r.size for r in live),
        "entries": len(live),
        "reserved_bytes": sum(r.charge for r in writing),
        "writers": len(writing),
        "replaced_bytes": sum(r.charge for r in replaced),
    }


def _diff(counters: Any, sums: dict[str, int]) -> list[str]:
    return [f"{k} {getattr(counters, k)} != {v} from rows" for k, v in sums.items() if getattr(counters, k) != v]


def owner_alive_readonly(owners_dir: Path, token: str | None) -> bool:
    """Whether the process holding ``token`` runs; unlike recovery's check, leaves a dead owner's file."""
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


class IndexSurgery:
    """Row changes that keep the index's invariants, inside one exclusive transaction.

    Obtained from ``with cache.surgery() as s:``; every writer and the evictor are excluded
    meanwhile, so what a method reads is still true when the next one writes. Writing
    methods need a cache opened for writing.
    """

    def __init__(self, cache: "Cache") -> None:
        self._cache = cache
        self._index = cache._index

    def _writable(self) -> None:
        self._cache._ensure_writable()

    # --- reads under the lock ---------------------------------------------------------------
    def live_row(self, key: str) -> Row | None:
        return self._index.live_row(key)

    def owned_name(self, name: str) -> bool:
        """True if a LIVE or REPLACED row names this file."""
        return bool(self._index.rows_with_name(name, states=(LIVE, REPLACED)))

    def journaled(self, name: str) -> bool:
        """True if a writer's journal names this file: renamed into place, its row not committed
        yet (a live writer's batch, or a dead writer's that the next writing open replays).
        Not an orphan: a scan must leave it alone."""
        return name in self._cache._journaled_names()

    def row_present(self, row: Row) -> bool:
        return self._index.state_of(row.id) is not None

    def counters(self) -> Counters:
        return self._index.counters()

    def counter_differences(self) -> list[str]:
        from .index import WRITING

        sums = _sums(self._index.iter_live("key"), self._index.rows_in_state(WRITING), self._index.rows_in_state(REPLACED))
        return _diff(self._index.counters(), sums)

    # --- changes ----------------------------------------------------------------------------
    def drop_row(self, row: Row) -> None:
        """Forget a row whose file is gone or is not the cache's to touch (the file is left alone)."""
        self._writable()
        self._index.delete_rows([row.id])  # the index's triggers keep its size totals

    def reindex(self, row: Row, ino: int, checksum: str) -> None:
        """The same entry, indexed again with the inode its file has now (created/accessed restart)."""
        self._writable()
        self._index.delete_rows([row.id])
        self._index.insert_live(row.key, row.name, row.size, row.charge, checksum, ino, time.time())

    def drop_entry(self, key: str) -> None:
        """Remove a corrupt entry as :meth:`Cache.delete` does (a pinned file stays, counted)."""
        self._writable()
        row = self._index.live_row(key)
        if row is not None:
            self._index.mark_replaced(row.id)
            self._cache._reap_rows_locked([row._replace(state=REPLACED)])

    def adopt_orphan(self, key: str, name: str, size: int, ino: int, checksum: str) -> bool:
        """Index a sound file no row knows; False (nothing changed) when it would pass max_size."""
        self._writable()
        charge = self._cache._charge(size)
        if self._index.counters().used_bytes + charge > self._cache.max_bytes:
            return False
        self._index.insert_live(key, name, size, charge, checksum, ino, time.time())
        return True

    def recount(self) -> Counters:
        self._writable()
        return self._index.recount()
