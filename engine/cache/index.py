"""The cache index: which entries exist, their sizes, checksums and last access.

:class:`IndexBackend` is the small interface the cache needs; :class:`SQLiteIndex`
implements it in a WAL-mode SQLite file inside the root. A backend for a shared
Redis-compatible server implements the same methods.

Rows have three states:

``LIVE``
    a complete entry; its file is at ``name``.
``WRITING``
    a reservation: a writer (``owner``) is filling ``part``; its ``charge``
    counts against the bound from the moment it is inserted.
``REPLACED``
    an old version overwritten or deleted while a reader had it pinned; its file stays
    at ``name``, untouched, and counted until the pin is gone.

Totals live in one ``counters`` row updated in the same transactions, so reading
the cache size never sums the table.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator, NamedTuple, Protocol, Sequence

from .locks import ProcessMutex

__all__ = [
    "Row",
    "Counters",
    "IndexBackend",
    "SQLiteIndex",
    "IndexFull",
    "IndexLost",
    "LIVE",
    "WRITING",
    "REPLACED",
    "SCHEMA_VERSION",
]

LIVE, WRITING, REPLACED = 0, 1, 2
SCHEMA_VERSION = 1

_COLUMNS = "id, key, name, size, charge, state, owner, part, checksum, ino, created, accessed"


def _contribution(sign: str, row: str) -> str:
    """SET clause adding (sign=+) or removing (sign=-) one row's bytes from the totals of its state."""
    return (
        f"live_bytes = live_bytes {sign} (CASE WHEN {row}.state = 0 THEN {row}.charge ELSE 0 END), "
        f"live_data_bytes = live_data_bytes {sign} (CASE WHEN {row}.state = 0 THEN {row}.size ELSE 0 END), "
        f"entries = entries {sign} ({row}.state = 0), "
        f"reserved_bytes = reserved_bytes {sign} (CASE WHEN {row}.state = 1 THEN {row}.charge ELSE 0 END), "
        f"writers = writers {sign} ({row}.state = 1), "
        f"replaced_bytes = replaced_bytes {sign} (CASE WHEN {row}.state = 2 THEN {row}.charge ELSE 0 END)"
    )


# The size totals follow every row change inside SQLite itself: they can never drift from the
# rows, and the hot path saves a Python round-trip per statement.
_COUNTER_TRIGGERS = f"""
    CREATE TRIGGER IF NOT EXISTS entries_counted_insert AFTER INSERT ON entries BEGIN
        UPDATE counters SET {_contribution("+", "NEW")} WHERE id = 1;
    END;
    CREATE TRIGGER IF NOT EXISTS entries_counted_delete AFTER DELETE ON entries BEGIN
        UPDATE counters SET {_contribution("-", "OLD")} WHERE id = 1;
    END;
    CREATE TRIGGER IF NOT EXISTS entries_counted_update AFTER UPDATE OF state, size, charge ON entries BEGIN
        UPDATE counters SET {_contribution("-", "OLD")} WHERE id = 1;
        UPDATE counters SET {_contribution("+", "NEW")} WHERE id = 1;
    END;
"""


class IndexFull(Exception):
    """The index could not be written because the filesystem is full.

    ``retryable`` is True when the index freed its reserve of disk space to get out of
    it: the same operation, tried once more, can commit (and an eviction then frees more).
    """

    def __init__(self, retryable: bool) -> None:
        super().__init__("the filesystem holding the cache index is full")
        self.retryable = retryable


class IndexLost(sqlite3.DatabaseError):
    """The index file exists but holds no cachewatch index (empty, or another database).

    Raised instead of silently creating a fresh schema in it when the caller said
    ``create=False``: over existing entry files a fresh index would make every entry an
    orphan for the sweep to delete (issue 9, item 2).
    """


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class Row(NamedTuple):
    id: int
    key: str
    name: str
    size: int
    charge: int
    state: int
    owner: str | None
    part: str | None
    checksum: str | None
    ino: int | None
    created: float
    accessed: float


class Counters(NamedTuple):
    live_bytes: int
    live_data_bytes: int
    entries: int
    reserved_bytes: int
    writers: int
    replaced_bytes: int
    hits: int
    misses: int
    evicted_files: int
    evicted_bytes: int
    expired_files: int

    @property
    def used_bytes(self) -> int:
        return self.live_bytes + self.reserved_bytes + self.replaced_bytes


_COUNTER_NAMES = Counters._fields


class IndexBackend(Protocol):
    """What :class:`~cachewatch.engine.cache.Cache` needs from an index.

    Methods marked *(write)* are called only inside :meth:`transaction`, which
    must be exclusive across every process using the cache.
    """

    def transaction(self) -> ContextManager[None]: ...
    def counters(self) -> Counters: ...
    def add_counters(self, **deltas: int) -> None: ...  # (write)
    def live_row(self, key: str) -> Row | None: ...
    def insert_live(self, key: str, name: str, size: int, charge: int, checksum: str, ino: int, now: float) -> int: ...  # (write)
    def insert_new_live_many(self, rows: Sequence[tuple[str, str, int, int, str, int, float]]) -> bool: ...  # (write) True: every row went in
    def insert_replaced(self, key: str, name: str, size: int, charge: int, checksum: str, ino: int, now: float) -> int: ...  # (write)
    def mark_replaced(self, row_id: int) -> None: ...  # (write)
    def rows_with_name(self, name: str, states: Sequence[int] = (0, 1, 2)) -> list[Row]: ...
    def delete_rows(self, row_ids: Sequence[int]) -> None: ...  # (write)
    def delete_replaced(self, row: Row) -> bool: ...  # (write) only if still that REPLACED row
    def delete_live(self, row: Row) -> bool: ...  # (write) only if still that LIVE row
    def delete_live_many(self, rows: Sequence[Row]) -> list[Row]: ...  # (write) those still as read; returns them
    def replaced_row(self, row: Row) -> bool: ...
    def lru_candidates(self, limit: int, offset: int) -> list[Row]: ...
    def expired_candidates(self, created_before: float, limit: int, offset: int) -> list[Row]: ...
    def rows_in_state(self, state: int) -> list[Row]: ...
    def state_of(self, row_id: int) -> int | None: ...
    def touch(self, accesses: Sequence[tuple[float, int]]) -> None: ...  # (write)
    def iter_live(self, order: str) -> Iterator[Row]: ...
    def known_names(self) -> set[str]: ...
    def row_for_name(self, name: str) -> Row | None: ...
    def get_meta(self, name: str) -> str | None: ...
    def set_meta(self, name: str, value: str) -> None: ...  # (write)
    def recount(self) -> Counters: ...  # (write)
    def ensure_ttl_index(self) -> None: ...  # (write)
    def reopen_after_fork(self) -> None: ...
    def close(self) -> None: ...


def _locked(method):  # type: ignore[no-untyped-def]
    """Serialise use of the one connection between threads of this process."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class SQLiteIndex:
    """SQLite in WAL mode; writers are serialised by a :class:`ProcessMutex` flock."""

    def __init__(
        self,
        db_path: Path,
        mutex: ProcessMutex,
        release_reserve: "Callable[[], bool] | None" = None,
        *,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.db_path = db_path
        self.mutex = mutex
        self.readonly = readonly
        self._release_reserve = release_reserve or (lambda: False)
        self._lock = threading.RLock()
        _OPEN_INDEXES.add(self)
        self._db = self._connect(journal=False)
        self._in_txn = False
        if self._read_user_version() != SCHEMA_VERSION:
            if not create or readonly:
                version = self._read_user_version()
                self.close()
                if version == 0:
                    raise IndexLost(f"{db_path} holds no cachewatch index")
                raise sqlite3.DatabaseError(f"index schema version {version} is not {SCHEMA_VERSION}")
            self._set_journal_mode()
            with self.transaction():
                self._create_schema()
        else:
            self._set_journal_mode()

    # --- connection -------------------------------------------------------------------------
    def _set_journal_mode(self) -> None:
        # Not before the schema is known to be there: on an empty file this write would make
        # a lost index look like a valid new one.
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal" and not self.readonly:
            with self.mutex:
                self._db.execute("PRAGMA journal_mode=WAL")

    def _connect(self, journal: bool = True) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=60.0)
        db.execute("PRAGMA busy_timeout=60000")
        if journal:
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal" and not self.readonly:
                with self.mutex:
                    db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL: durable to a crash of the process, not of the OS
        db.execute("PRAGMA journal_size_limit=4194304")
        db.execute("PRAGMA temp_store=MEMORY")
        return db

    def reopen_after_fork(self) -> None:
        # Never use (or close) a connection inherited across fork; keep it referenced so its
        # finaliser cannot run in the child, and open a fresh one.
        _ABANDONED.append(self._db)
        self._lock = threading.RLock()
        self._db = self._connect()
        self._in_txn = False

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass

    def _read_user_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _create_schema(self) -> None:
        version = self._read_user_version()
        if version == SCHEMA_VERSION:
            return
        if version not in (0,):
            raise sqlite3.DatabaseError(f"index schema version {version} is newer than this cachewatch ({SCHEMA_VERSION})")
        script = (
            """
            CREATE TABLE IF NOT EXISTS entries (
                id INTEGER PRIMARY KEY,
                key TEXT NOT NULL,
                name TEXT NOT NULL,
                size INTEGER NOT NULL,
                charge INTEGER NOT NULL,
                state INTEGER NOT NULL,
                owner TEXT,
                part TEXT,
                checksum TEXT,
                ino INTEGER,
                created REAL NOT NULL,
                accessed REAL NOT NULL
            );
            CREATE UNIQUE INDEX IF NOT EXISTS entries_live_key ON entries(key) WHERE state = 0;
            CREATE INDEX IF NOT EXISTS entries_lru ON entries(accessed) WHERE state = 0;
            CREATE INDEX IF NOT EXISTS entries_writing ON entries(id) WHERE state = 1;
            CREATE INDEX IF NOT EXISTS entries_replaced ON entries(id) WHERE state = 2;
            CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY CHECK (id = 1), """
            + ", ".join(f"{n} INTEGER NOT NULL DEFAULT 0" for n in _COUNTER_NAMES)
            + """);
            INSERT OR IGNORE INTO counters (id) VALUES (1);
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
            """
            + _COUNTER_TRIGGERS
        )
        # Not executescript(): it would COMMIT the surrounding BEGIN IMMEDIATE first.
        # complete_statement() knows that a trigger's body (BEGIN ... END) holds semicolons.
        buf = ""
        for piece in script.split(";"):
            buf += piece + ";"
            if sqlite3.complete_statement(buf):
                if buf.strip(" \n\t;"):
                    self._db.execute(buf)
                buf = ""
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # --- transactions -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """An exclusive write section: the process mutex, then ``BEGIN IMMEDIATE``. Re-entrant."""
        with self.mutex, self._lock:
            if self._in_txn:
                yield
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._in_txn = True
                try:
                    yield
                except BaseException:
                    self._in_txn = False
                    self._rollback()
                    raise
                else:
                    self._in_txn = False
                    try:
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._rollback()
                        raise
            except sqlite3.OperationalError as exc:
                if _is_full(exc):
                    raise IndexFull(retryable=self._release_reserve()) from exc
                raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # --- counters ---------------------------------------------------------------------------
    @_locked
    def counters(self) -> Counters:
        row = self._db.execute(f"SELECT {', '.join(_COUNTER_NAMES)} FROM counters WHERE id = 1").fetchone()
        return Counters(*row)

    @_locked
    def add_counters(self, **deltas: int) -> None:
        sets = ", ".join(f"{name} = {name} + :{name}" for name in deltas)
        self._db.execute(f"UPDATE counters SET {sets} WHERE id = 1", deltas)

    @_locked
    def recount(self) -> Counters:
        """Recompute the size counters from the rows (used by verify --repair)."""
        live = self._db.execute(
            "SELECT COALESCE(SUM(charge), 0), COALESCE(SUM(size), 0), COUNT(*) FROM entries WHERE state = 0"
        ).fetchone()
        writing = self._db.execute("SELECT COALESCE(SUM(charge), 0), COUNT(*) FROM entries WHERE state = 1").fetchone()
        replaced = self._db.execute("SELECT COALESCE(SUM(charge), 0) FROM entries WHERE state = 2").fetchone()
        self._db.execute(
            "UPDATE counters SET live_bytes = ?, live_data_bytes = ?, entries = ?, reserved_bytes = ?, writers = ?, "
            "replaced_bytes = ? WHERE id = 1",
            (live[0], live[1], live[2], writing[0], writing[1], replaced[0]),
        )
        return self.counters()

    # --- rows -------------------------------------------------------------------------------
    @_locked
    def live_row(self, key: str) -> Row | None:
        r = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE key = ? AND state = 0", (key,)).fetchone()
        return Row(*r) if r else None

    def row_for_name(self, name: str) -> Row | None:
        rows = self.rows_with_name(name)
        return min(rows, key=lambda r: r.state) if rows else None

    @_locked
    def insert_live(self, key: str, name: str, size: int, charge: int, checksum: str, ino: int, now: float) -> int:
        cur = self._db.execute(
            "INSERT INTO entries (key, name, size, charge, state, checksum, ino, created, accessed) "
            "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (key, name, size, charge, checksum, ino, now, now),
        )
        return int(cur.lastrowid)

    @_locked
    def insert_new_live_many(self, rows: Sequence[tuple[str, str, int, int, str, int, float]]) -> bool:
        """LIVE rows (key, name, size, charge, checksum, ino, time) for keys that have none, in one
        call (the common batch of puts: no lookup per row); a row whose key has a LIVE row already
        (or one inserted before it in ``rows``) is skipped. True when every row went in."""
        cur = self._db.executemany(
            "INSERT INTO entries (key, name, size, charge, state, checksum, ino, created, accessed) "
            "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?7) ON CONFLICT (key) WHERE state = 0 DO NOTHING",
            rows,
        )
        return cur.rowcount == len(rows)

    @_locked
    def insert_replaced(self, key: str, name: str, size: int, charge: int, checksum: str, ino: int, now: float) -> int:
        """An old version from the start: a file put before the key's indexed entry, indexed after it."""
        cur = self._db.execute(
            "INSERT INTO entries (key, name, size, charge, state, checksum, ino, created, accessed) "
            "VALUES (?, ?, ?, ?, 2, ?, ?, ?, ?)",
            (key, name, size, charge, checksum, ino, now, now),
        )
        return int(cur.lastrowid)

    @_locked
    def mark_replaced(self, row_id: int) -> None:
        self._db.execute("UPDATE entries SET state = 2 WHERE id = ?", (row_id,))

    @_locked
    def rows_with_name(self, name: str, states: Sequence[int] = (0, 1, 2)) -> list[Row]:
        # No index on name (one less page per write): go through the key the name encodes,
        # and scan only where that is impossible (hashed long keys) -- a rare repair path.
        from .keys import name_to_key

        key = name_to_key(name)
        if key is None:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE name = ?", (name,)).fetchall()
        else:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE key = ? AND state = 0 AND name = ?", (key, name)).fetchall()
            rows += self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE state = 1 AND name = ?", (name,)).fetchall()
            rows += self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE state = 2 AND name = ?", (name,)).fetchall()
        return [Row(*r) for r in rows if r[5] in states]

    @_locked
    def ensure_ttl_index(self) -> None:
        """The created-time index only pays for itself when a TTL is set."""
        self._db.execute("CREATE INDEX IF NOT EXISTS entries_created ON entries(created) WHERE state = 0")

    @_locked
    def delete_rows(self, row_ids: Sequence[int]) -> None:
        self._db.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in row_ids])

    @_locked
    def delete_replaced(self, row: Row) -> bool:
        """Drop one ``REPLACED`` row if it is still the same row (ids are reused after deletes)."""
        cur = self._db.execute(
            "DELETE FROM entries WHERE id = ? AND state = 2 AND name = ? AND ino IS ?", (row.id, row.name, row.ino)
        )
        return cur.rowcount > 0

    @_locked
    def delete_live(self, row: Row) -> bool:
        """Drop one ``LIVE`` row if it is still the same row (an evictor's victim, chosen before its transaction)."""
        cur = self._db.execute(
            "DELETE FROM entries WHERE id = ? AND state = 0 AND name = ? AND ino IS ?", (row.id, row.name, row.ino)
        )
        return cur.rowcount > 0

    @_locked
    def delete_live_many(self, rows: Sequence[Row]) -> list[Row]:
        """Drop the ``LIVE`` rows that are still as read (same id, name and inode: ids are reused), in
        two statements whatever their number (an evictor's batch); returns those dropped."""
        if not rows:
            return []
        found = {
            (r[0], r[1], r[2])
            for r in self._db.execute(
                "SELECT id, name, ino FROM entries WHERE state = 0 AND id IN (SELECT value FROM json_each(?))",
                (json.dumps([r.id for r in rows]),),
            )
        }
        gone = [r for r in rows if (r.id, r.name, r.ino) in found]
        if gone:
            self._db.execute(
                "DELETE FROM entries WHERE state = 0 AND id IN (SELECT value FROM json_each(?))",
                (json.dumps([r.id for r in gone]),),
            )
        return gone

    @_locked
    def replaced_row(self, row: Row) -> bool:
        """True while ``row`` is still in the index as the same ``REPLACED`` row."""
        r = self._db.execute(
            "SELECT 1 FROM entries WHERE id = ? AND state = 2 AND name = ? AND ino IS ?", (row.id, row.name, row.ino)
        ).fetchone()
        return r is not None

    @_locked
    def lru_candidates(self, limit: int, offset: int) -> list[Row]:
        return [
            Row(*r)
            for r in self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE state = 0 ORDER BY accessed, id LIMIT ? OFFSET ?",
                (limit, offset),
            )
        ]

    @_locked
    def expired_candidates(self, created_before: float, limit: int, offset: int) -> list[Row]:
        return [
            Row(*r)
            for r in self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE state = 0 AND created < ? ORDER BY created, id LIMIT ? OFFSET ?",
                (created_before, limit, offset),
            )
        ]

    @_locked
    def rows_in_state(self, state: int) -> list[Row]:
        # A literal state (not a parameter) lets SQLite use the partial index for that state.
        return [Row(*r) for r in self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE state = {int(state)}")]

    @_locked
    def touch(self, accesses: Sequence[tuple[float, int]]) -> None:
        self._db.executemany(
            "UPDATE entries SET accessed = ?1 WHERE id = ?2 AND state = 0 AND accessed < ?1",
            list(accesses),
        )

    def iter_live(self, order: str = "lru") -> Iterator[Row]:
        order_by = {"lru": "accessed, id", "key": "key", "size": "size DESC, key", "created": "created, id"}[order]
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE state = 0 ORDER BY {order_by}").fetchall()
        for r in rows:
            yield Row(*r)

    @_locked
    def state_of(self, row_id: int) -> int | None:
        r = self._db.execute("SELECT state FROM entries WHERE id = ?", (row_id,)).fetchone()
        return None if r is None else int(r[0])

    @_locked
    def known_names(self) -> set[str]:
        """Names of every row: entries, reservations (their tentative name) and replaced versions."""
        return {r[0] for r in self._db.execute("SELECT name FROM entries")}

    @_locked
    def get_meta(self, name: str) -> str | None:
        r = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return r[0] if r else None

    @_locked
    def set_meta(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))


_ABANDONED: list[sqlite3.Connection] = []
_OPEN_INDEXES: "weakref.WeakSet[SQLiteIndex]" = weakref.WeakSet()
_HELD_FOR_FORK: list[SQLiteIndex] = []


# A fork while another thread (the orphan sweep, a daemon's sampler) is inside SQLite would
# hand the child SQLite's internal mutexes in a locked state: the child's first call hangs.
# So a fork waits until no thread of this process is using an index.
def _before_fork() -> None:
    for index in list(_OPEN_INDEXES):
        index._lock.acquire()
        _HELD_FOR_FORK.append(index)


def _after_fork_in_parent() -> None:
    while _HELD_FOR_FORK:
        _HELD_FOR_FORK.pop()._lock.release()


def _after_fork_in_child() -> None:
    while _HELD_FOR_FORK:
        _HELD_FOR_FORK.pop()._lock = threading.RLock()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
