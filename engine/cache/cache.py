"""The managed cache: a directory that any number of processes share under one hard size bound.

How the bound holds (``bytes of entry files + writes in flight <= max_size`` at every
instant, whatever the number of processes); docs/cache.md has the whole argument:

1. **Reserve** (the per-put critical section: ledger arithmetic under the reservation
   mutex). The put adds the bytes it will occupy to its slot of the shared ledger
   (:mod:`.ledger`), checked against the indexed size (read before the mutex) plus *every*
   process's ledger bytes. One count for all processes, not one per process (seed 000's flaw).
2. **Evict first** when there is no room under the target: one evictor at a time (its own
   lock), victims out of the index in one transaction, counted in its ledger slot until their
   files are unlinked outside any lock.
3. **Write** ``.cachewatch/tmp/<owner>.<n>.part``, **journal** the entry in this process's
   journal, **rename** it into place with RENAME_NOREPLACE (never over another file), still
   reserved.
4. **Index, batched**: this process's new rows go in one transaction every 64 puts / 0.1 s /
   flush, close, fork, exit, eviction; only after that commit do their bytes leave the ledger.
5. A writer that dies leaves its ledger slot and journal behind; the next process that needs
   room (or opens the cache) proves the owner dead with ``flock``, replays the journal (indexes
   renamed files, unlinks evicted ones), removes its ``.part`` files, and only then frees the slot.

Sizes are charged rounded up to the filesystem block, so the bound holds for the
space the disk really gives, not only for file lengths.
"""

from __future__ import annotations

import errno
import fcntl
import atexit
import ctypes
import functools
import itertools
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple
from urllib.parse import quote

import xxhash

from ..config import Config, load_config, target_bytes as _target_from_ratio
from ..errors import CacheBusy, CacheDiskFull, CacheError, CacheFull, CacheRootError, ConfigError
from ..events import EventLog
from ..sizes import SizeError, format_size, parse_duration, parse_size
from .index import LIVE, REPLACED, WRITING, Counters, IndexBackend, IndexFull, IndexLost, Row, SQLiteIndex
from .integrity import CacheLayout, IndexSnapshot, IndexSurgery, WriterSlot, owner_alive_readonly
from .ledger import Ledger, LedgerBackend
from .keys import SHARD_RE, key_to_name, validate_key, versioned_name
from .locks import FORKS, OwnerLock, ProcessMutex, owner_alive, try_exclusive
from .types import CacheStats, EntryInfo, EvictionReport

__all__ = ["Cache", "CacheMiss", "META_DIR", "index_kwargs"]

log = logging.getLogger("cachewatch.cache")

META_DIR = ".cachewatch"
_EVENTS_FILE = "events.jsonl"
_COPY_CHUNK = 1 << 20
_BATCH = 128
_KEYS_IN_EVENT = 50
_SWEEP_EVERY_S = 3600.0


# Fault injection for the crash tests (tests/cache/test_faults.py): a process started with
# CACHEWATCH_CRASH_AT=<point> sends itself SIGKILL at that step of the real code path. Read
# once at import; unset, each point costs one comparison.
_CRASH_AT = os.environ.get("CACHEWATCH_CRASH_AT") or None


def _crash_point(name: str) -> None:
    if _CRASH_AT is not None:
        if _CRASH_AT == name:
            os.kill(os.getpid(), signal.SIGKILL)
        elif _CRASH_AT == "stop:" + name:  # stopped, not killed: the test resumes it with SIGCONT
            os.kill(os.getpid(), signal.SIGSTOP)


class _Put(NamedTuple):
    """One journal record: an entry renamed (or about to be) into place, not yet in the index."""

    key: str
    name: str  # where the file goes: the key's own name, or a versioned one if that is taken
    size: int
    charge: int
    checksum: str
    ino: int
    created: float


_PENDING_ID = -1  # the row id of an entry this process put that is not indexed yet
# How old the index counters behind a reservation's estimate may be. An estimate never
# under-counts however old (see _refresh_estimate), and evictions no longer make old ones too
# high (Ledger.evicted_total), so it is read again mostly when it says "no room".
_ESTIMATE_S = 1.0


# A journal record: "P", key, name, size, charge, checksum, inode, time, each ended by NUL (a
# key may hold any character but NUL). One write(2) per record: a kill -9 cannot tear it; a
# machine crash can tear the last one, which a reader drops (its file is then a sweep orphan).
_RECORD_FIELDS = 8


def _journal_line(rec: _Put, kind: str = "P") -> bytes:
    """``P``: a put renamed (or about to be) into place; ``E``: an evicted file, out of the index, to unlink."""
    return f"{kind}\0{rec.key}\0{rec.name}\0{rec.size}\0{rec.charge}\0{rec.checksum}\0{rec.ino}\0{rec.created!r}\0".encode()


def _read_journal(path: str) -> list[tuple[str, _Put]]:
    try:
        with open(path, "rb") as fh:
            fields = fh.read().decode("utf-8", "replace").split("\0")
    except FileNotFoundError:
        return []
    out: list[tuple[str, _Put]] = []
    for i in range(0, len(fields) - _RECORD_FIELDS + 1, _RECORD_FIELDS):
        f = fields[i : i + _RECORD_FIELDS]
        if f[0] not in ("P", "E"):
            break  # out of step: a torn record, and nothing valid can follow it
        try:
            out.append((f[0], _Put(f[1], f[2], int(f[3]), int(f[4]), f[5], int(f[6]), float(f[7]))))
        except ValueError:
            break
    return out


class CacheMiss(CacheError, KeyError):
    """Raised by :meth:`Cache.pin` for a key that is not in the cache."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "cache miss"


@dataclass
class _Pending:
    """Per-process buffer of reads, flushed in one write transaction (not one per get)."""

    touches: dict[int, float]
    hits: int = 0
    misses: int = 0
    repairs: set[str] | None = None
    last_flush: float = 0.0


def _retry_when_index_full(method: Any) -> Any:
    """Run a public method that writes the index once more if the index gave up its disk reserve."""

    @functools.wraps(method)
    def wrapper(self: "Cache", *args: Any, **kwargs: Any) -> Any:
        return self._retrying(lambda: method(self, *args, **kwargs))

    return wrapper


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, IndexFull):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class Cache:
    """A directory cache shared by any number of processes on one machine.

    >>> with Cache("/data/cache", max_size="100GB") as cache:   # doctest: +SKIP
    ...     cache.put("train/a.npz", payload)
    ...     with cache.pin("train/a.npz") as path:
    ...         arr = np.load(path)

    ``max_size`` is a hard bound on entry bytes on disk plus writes in flight;
    eviction brings the cache down to ``target_ratio x max_size`` (or ``target_size``).
    ``ttl`` (seconds or ``"7d"``) expires entries that old since they were written.
    ``max_size`` may be omitted to reuse the limits stored by the last opener.
    ``new_index_over_files`` lets a repair tool start a fresh index over files whose index was
    lost (they are orphans until re-indexed); otherwise such a cache is refused.

    **One root has one max.** The limits (max, target, ttl) are stored in the index by the
    process that creates the cache. A later opener that passes other limits *adopts the
    stored ones* with a warning (``limits_note`` says what differed); ``resize=True`` (the
    ``cachewatch cache resize`` command) is the one way to change them.

    ``readonly=True`` opens for inspection (``stats``, ``entries``, ``eviction_log``, ``get``
    and ``read`` without counting): no recovery, no eviction, no sweep, nothing written or
    deleted. Writing methods then raise :class:`CacheError`.
    """

    # The seam (issue 11, item 5): everything the cache does with its bound and its rows goes
    # through these two small protocols; today's implementations are shared memory and SQLite.
    _ledger: LedgerBackend
    _index: IndexBackend

    def __new__(cls, root: Any = None, *args: Any, index: str | None = None, **kwargs: Any) -> "Cache":
        # One class for users; a root indexed in Redis (``index="redis://..."``, or a root whose
        # .cachewatch/redis.json says so) is a RedisCache (engine/cache/redis_cache.py).
        if cls is Cache and (_is_redis_url(index) or (index is None and _has_redis_marker(root))):
            from .redis_cache import RedisCache

            return super().__new__(RedisCache)
        return super().__new__(cls)

    def __init__(
        self,
        root: str | os.PathLike,
        max_size: int | str | None = None,
        target_ratio: float = 0.9,
        ttl: float | str | None = None,
        *,
        target_size: int | str | None = None,
        wait_timeout: float = 60.0,
        flush_interval: float = 1.0,
        batch_puts: int = 64,
        batch_interval: float = 0.1,
        sweep: bool = True,
        new_index_over_files: bool = False,
        readonly: bool = False,
        resize: bool = False,
        index: str | None = None,
    ) -> None:
        if index not in (None, "sqlite"):
            raise CacheError(f"index = {index!r} is not a cache index; write 'sqlite' (one machine) or 'redis://host:6379/0'")
        self._init_args = dict(
            root=root,
            max_size=max_size,
            target_ratio=target_ratio,
            ttl=ttl,
            target_size=target_size,
            wait_timeout=wait_timeout,
            flush_interval=flush_interval,
            batch_puts=batch_puts,
            batch_interval=batch_interval,
            sweep=sweep,
        )
        self._closed = True
        self._set_root(root)
        self.wait_timeout = float(wait_timeout)
        self.flush_interval = float(flush_interval)
        max_bytes, target, self.ttl_s = check_limits(max_size, target_size, target_ratio, ttl)

        self._meta = self.root / META_DIR
        self.readonly = bool(readonly)
        self.limits_note: str | None = None
        db_path = self._meta / "index.sqlite"
        state = _index_file_state(db_path)
        has_files = self._meta.is_dir() and _has_entry_files(self.root)
        if state != "present" and has_files and (readonly or not new_index_over_files):
            # A lost index: starting a fresh one would make every entry an orphan for the sweep
            # to delete. Hours of preprocessing are worth a command; say which.
            raise self._lost_index_error(state)
        if max_bytes is None and not readonly and self._meta.is_dir():
            # Another process may be creating this cache right now (its limits are set in the
            # transaction that ends its opening): wait for them rather than fail.
            wait_s = min(self.wait_timeout, _CREATOR_WAIT_S)
            if _await_stored_max(db_path, self._meta, wait_s) is None and self._meta.is_dir():
                self._no_max_size(f" (its {META_DIR}/ exists but no process set the limits within {wait_s:g}s)")
            state = _index_file_state(db_path)
        if max_bytes is None and state != "present" and not readonly:
            self._no_max_size()
        if readonly:
            if not self._meta.is_dir() or state == "missing":
                raise CacheRootError(f"'{self.root}' is not a cachewatch cache (no {META_DIR}/index.sqlite); check the path or [cache] root")
        else:
            self._prepare_root()
        if state != "present" and new_index_over_files:
            _move_index_aside(db_path)
        self._tmp = self._meta / "tmp"
        self._tmp_s = str(self._tmp)
        self._tmp_pfx = os.path.join(self._tmp_s, "")
        self._tmp_pfx_b = os.fsencode(self._tmp_pfx)
        self._owners = self._meta / "owners"
        self._trash = self._meta / "trash"  # (older versions renamed evicted files here; recovery still empties it)
        if not readonly:
            for d in (self._tmp, self._owners, self._trash):
                d.mkdir(exist_ok=True)
        # Three locks. Lock order: evictor lock, then reservation mutex, then index lock; the
        # index lock is never held while waiting for the mutex (a batch commits, *then* releases
        # its ledger bytes). The reservation mutex guards the ledger only: the per-put critical
        # section. The index lock serialises index writes (batches of rows, evictions). The
        # evictor lock lets one process evict at a time without stopping reservations.
        self._mutex = ProcessMutex(self._meta / "lock")
        self._index_mutex = ProcessMutex(self._meta / "index.lock")
        self._evict_mutex = ProcessMutex(self._meta / "evict.lock")
        if readonly:
            self._ledger = Ledger(self._meta / "ledger", readonly=True)
        else:
            with self._mutex:
                self._ledger = Ledger(self._meta / "ledger")
        self._reserve_path = self._meta / "reserve"
        # A fresh schema only where nothing can be lost: no entry files, or a repair tool asked.
        may_create = not readonly and (not has_files or new_index_over_files)
        try:
            try:
                self._index = SQLiteIndex(
                    db_path, self._index_mutex, self._release_disk_reserve, create=may_create, readonly=readonly
                )
            except sqlite3.DatabaseError:
                if not new_index_over_files or readonly:
                    raise
                _move_index_aside(db_path)  # a repair tool asked for a new index: keep the broken one aside
                self._index = SQLiteIndex(db_path, self._index_mutex, self._release_disk_reserve, create=True)
        except IndexLost:
            self._ledger.close()
            raise self._lost_index_error("empty") from None
        except sqlite3.DatabaseError as exc:
            self._ledger.close()
            raise CacheRootError(
                f"cache index {db_path} cannot be read ({exc}); move it aside and run "
                f"`cachewatch verify {self.root} --repair --max-size SIZE` to re-index the files"
            ) from None
        self.events = EventLog(self._meta / _EVENTS_FILE, source=f"cache:{self.root}")
        self._pid = os.getpid()
        self._forks = FORKS[0]  # compared on every call instead of getpid(2): see locks.FORKS
        self._owner: OwnerLock | None = None  # made on the first write: readers need no token
        self._slot: int | None = None  # this process's ledger slot, claimed on the first write
        self._pending = _Pending(touches={}, repairs=set(), last_flush=time.monotonic())
        self._sweeper: threading.Thread | None = None
        self._stop_sweep = threading.Event()
        self._restore_reserve = False
        self._part_seq = itertools.count(1)
        self._liveness_checked: dict[str, float] = {}
        self._pending_reap: list[Row] = []  # old versions this process replaced: unlinked at its next transaction
        self._gone_files: set[tuple[int, str, int | None]] = set()  # of those, the ones whose files this process unlinked
        self._created_index = False
        # Puts renamed into place but not yet in the index (see _place, _commit_batch).
        self.batch_puts = max(1, int(batch_puts))
        self.batch_interval = float(batch_interval)
        self._journal_dir_s = str(self._meta / "journal")
        if not readonly:
            os.makedirs(self._journal_dir_s, exist_ok=True)
        self._journal_fd = -1
        self._batch: list[_Put] = []
        self._batch_keys: dict[str, _Put] = {}
        self._batch_touched: dict[str, float] = {}  # reads of pending entries (their LRU time)
        self._batch_t0 = 0.0
        self._batch_bytes = 0
        self._batch_cap = 1 << 62  # set with the first reservation's estimate
        self._evicting = 0  # evictions of this process with journal records not settled yet
        self._batch_lock = threading.RLock()
        self._slot_lock = threading.Lock()
        self._timer: threading.Thread | None = None
        self._timer_wake = threading.Event()
        self._est: tuple[int, int, int, float] = (0, 0, 0, -1e9)  # (released_total, indexed bytes, evicted_total, when read)
        self._closed = False
        if not readonly:
            _OPEN_CACHES.add(self)
            _PEERS_OPEN[0] = len(_OPEN_CACHES)

        try:
            if readonly:
                self._load_limits_readonly()
            else:
                _crash_point("open_before_limits")
                self._recover(startup=True, limits=(max_bytes, target, target_ratio, ttl, resize))
                self._ensure_disk_reserve()
                # Entries on disk only: other writers' ledger bytes are in flight (and a batch
                # being committed is counted twice for a moment), not a reason to evict at start-up.
                c = self._index.counters()
                used = c.live_bytes + c.replaced_bytes
                if used > self.max_bytes:
                    with self._evict_mutex:
                        log.warning(
                            "Cache %s is over its limit at start-up (%s > %s), evicting to target",
                            self.root, format_size(used), format_size(self.max_bytes),
                        )
                        self._evict_unlocked(self.target_bytes, "startup", time.time())
        except BaseException:
            self._close_handles()
            raise
        if sweep and not readonly and not new_index_over_files and not self._created_index:
            self._maybe_start_sweep()

    def _set_root(self, root: Any) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        self._root_s = str(self.root)  # string paths on the hot path: pathlib costs microseconds
        self._root_pfx = os.path.join(self._root_s, "")  # and concatenation, not os.path.join, per file
        self._root_pfx_b = os.fsencode(self._root_pfx)  # (names are ASCII or UTF-8: their .encode() is their fsencode)
        self._shard_paths: dict[str, Path] = {}

    def _lost_index_error(self, state: str) -> CacheRootError:
        what = {"missing": "missing", "empty": "empty (0 bytes or no cachewatch schema)"}.get(state, state)
        return CacheRootError(
            f"cache {self.root} holds entry files but its index is {what}; rebuild it with "
            f"`cachewatch verify {self.root} --repair --max-size SIZE`, or empty the directory"
        )

    def _load_limits_locked(
        self, max_bytes: int | None, target: int | None, target_ratio: float, ttl: Any, resize: bool
    ) -> None:
        """Settle this process's limits against the stored ones (inside the opening transaction)."""
        stored_block = self._index.get_meta("block_bytes")
        if stored_block is None:
            stored_block = str(_block_size(self.root))
            self._index.set_meta("block_bytes", stored_block)
            self._index.set_meta("created", repr(time.time()))
            self._created_index = True
        self.block_bytes = int(stored_block)
        stored_max = int(self._index.get_meta("max_bytes") or 0)
        if stored_max and not resize:
            # One root, one max: a second bound would let each process evict to its own idea of
            # full (and a read-only look with another config used to evict to it).
            stored_target = int(self._index.get_meta("target_bytes") or _target_from_ratio(stored_max, 0.9))
            stored_ttl_s = self._index.get_meta("ttl_s")
            stored_ttl = float(stored_ttl_s) if stored_ttl_s else None
            differs = []
            if max_bytes is not None and max_bytes != stored_max:
                differs.append(f"max_size {format_size(max_bytes)} (stored: {format_size(stored_max)})")
            if target is not None and target != stored_target:
                differs.append(f"target_size {format_size(target)} (stored: {format_size(stored_target)})")
            if ttl is not None and self.ttl_s != stored_ttl:
                differs.append(f"ttl {self.ttl_s!r}s (stored: {stored_ttl!r})")
            if differs:
                self.limits_note = (
                    f"cache {self.root} keeps its stored limits; this opener asked for " + ", ".join(differs)
                    + f"; change them with `cachewatch cache resize {self.root} --max-size SIZE`"
                )
                log.warning("%s", self.limits_note)
            self.max_bytes, self.target_bytes, self.ttl_s = stored_max, stored_target, stored_ttl
        else:
            if max_bytes is None:
                max_bytes = self._no_max_size()
            self.max_bytes = max_bytes
            self.target_bytes = target if target is not None else _target_from_ratio(max_bytes, target_ratio)
            if self.target_bytes > self.max_bytes:
                raise CacheError(
                    f"target_size {format_size(self.target_bytes)} is above max_size {format_size(self.max_bytes)}; "
                    f"the target must be at most the max"
                )
            self._index.set_meta("max_bytes", str(self.max_bytes))
            self._index.set_meta("target_bytes", str(self.target_bytes))
            self._index.set_meta("ttl_s", "" if self.ttl_s is None else repr(self.ttl_s))
        # Eviction goes this far below the target so that it runs in batches, not on every put.
        self.evict_batch_bytes = min(self.target_bytes, self.max_bytes // 100)
        if self.ttl_s is not None:
            self._index.ensure_ttl_index()

    def _load_limits_readonly(self) -> None:
        self.block_bytes = int(self._index.get_meta("block_bytes") or _block_size(self.root))
        self.max_bytes = int(self._index.get_meta("max_bytes") or 0)
        self.target_bytes = int(self._index.get_meta("target_bytes") or 0)
        stored_ttl = self._index.get_meta("ttl_s")
        self.ttl_s = float(stored_ttl) if stored_ttl else None
        self.evict_batch_bytes = min(self.target_bytes, self.max_bytes // 100)

    def _ensure_writable(self) -> None:
        if self.readonly:
            raise CacheError(f"cache {self.root} was opened read-only (for inspection); open it without readonly=True to change it")


    # ------------------------------------------------------------------------ disk reserve
    # A full disk must not lock the cache up: the transaction that evicts (and so frees space)
    # itself needs a little room in the SQLite WAL. A small preallocated file is kept aside and
    # given up the moment SQLite reports the disk full; it is made again after evictions.
    def _reserve_size(self) -> int:
        return max(64 * 1024, min(1 << 20, self.max_bytes // 128))

    def _release_disk_reserve(self) -> bool:
        try:
            os.unlink(self._reserve_path)
            return True
        except FileNotFoundError:
            return False

    def _ensure_disk_reserve(self) -> None:
        if os.path.exists(self._reserve_path):
            return
        tmp = self._meta / f"reserve.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.posix_fallocate(fd, 0, self._reserve_size())
            finally:
                os.close(fd)
            os.rename(tmp, self._reserve_path)
        except OSError:
            _unlink_quiet(tmp)  # no room yet: try again after the next eviction

    def _retrying(self, fn: "Callable[[], Any]") -> Any:
        """Run ``fn`` (which opens its own transaction) again once if the index gave up its reserve."""
        try:
            result = fn()
        except IndexFull as exc:
            if not exc.retryable:
                raise self._index_full_error() from None
            try:
                result = fn()
            except IndexFull:
                raise self._index_full_error() from None
        self._after_commit()
        return result

    def _after_commit(self) -> None:
        if self._restore_reserve:
            self._restore_reserve = False
            self._ensure_disk_reserve()

    def _index_full_error(self) -> CacheDiskFull:
        return CacheDiskFull(
            f"disk full under {self.root}: even the cache index cannot be written; "
            f"free space on that filesystem (the cache holds {format_size(self._index.counters().used_bytes)})"
        )

    def _log_event(self, kind: str, **fields: Any) -> None:
        # The event is the record, not the eviction: a full disk must not undo the eviction.
        try:
            self.events.append(kind, **fields)
        except OSError as exc:
            log.warning("could not append a %s event to %s (%s)", kind, self.events.path, exc.strerror)

    # ----------------------------------------------------------------------------------- setup
    def _no_max_size(self, why: str = "") -> int:
        raise CacheError(f"cache {self.root} has no max_size yet{why}; pass max_size (e.g. '100GB') or set [cache] max_size")

    def _prepare_root(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise CacheRootError(f"cache root '{root}' is a file, not a directory; point the cache at a directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheRootError(f"cache root '{root}' cannot be created ({exc.strerror}); choose a writable directory") from None
        if not self._meta.is_dir():
            try:
                foreign = next(iter(os.scandir(root)), None)
            except OSError as exc:
                raise CacheRootError(f"cache root '{root}' cannot be read ({exc.strerror})") from None
            if foreign is not None:
                raise CacheRootError(
                    f"cache root '{root}' is not empty and is not a cachewatch cache (no {META_DIR}/); "
                    f"use an empty directory, or `cachewatch watch {root}` for a directory other code writes"
                )
            try:
                self._meta.mkdir()
            except FileExistsError:
                pass
            except OSError as exc:
                raise CacheRootError(f"cache root '{root}' is not writable ({exc.strerror}); fix its permissions") from None
        if not os.access(self._meta, os.W_OK | os.X_OK):
            raise CacheRootError(f"cache root '{root}' is not writable by this user; fix the permissions of {self._meta}")

    @classmethod
    def from_config(cls, config: Config | str | os.PathLike | None = None, **overrides: Any) -> "Cache":
        """Open the cache named in ``[cache]`` of a :class:`Config` (or of the file at that path)."""
        cfg = config if isinstance(config, Config) else load_config(config)
        c = cfg.cache
        if c.root is None:
            raise ConfigError("[cache] root is not set; add root = '/path/to/cache' to cachewatch.toml")
        if c.max_size is None and "max_size" not in overrides:
            raise ConfigError("[cache] max_size is not set; add max_size = '100GB' to cachewatch.toml")
        kwargs: dict[str, Any] = dict(
            max_size=c.max_size, target_ratio=c.target_ratio, ttl=c.ttl, target_size=c.target_size
        )
        kwargs.update(index_kwargs(c))
        kwargs.update(overrides)
        return cls(c.root, **kwargs)

    def _ensure_open(self) -> None:
        if self._closed:
            raise CacheError(f"cache {self.root} is closed; open it again with Cache(...)")
        if self._forks != FORKS[0]:
            self._after_fork()

    def _after_fork(self) -> None:
        # A forked child (a DataLoader worker) must not share the parent's SQLite connection,
        # lock descriptors or liveness token.
        self._index.reopen_after_fork()
        self._mutex.reset_after_fork()
        self._index_mutex.reset_after_fork()
        self._evict_mutex.reset_after_fork()
        self._owner = None
        self._slot = None  # the parent's slot stays the parent's
        # The parent's pending puts, journal and timer stay the parent's to commit.
        self._journal_fd = -1  # (our copy of its descriptor is close-on-exec; never written to)
        self._batch, self._batch_keys, self._batch_touched = [], {}, {}
        self._batch_lock = threading.RLock()
        self._slot_lock = threading.Lock()
        self._timer = None
        self._timer_wake = threading.Event()  # (the parent's may have been locked at the fork)
        self._est = (0, 0, 0, -1e9)
        self._pending_reap = []
        self._gone_files = set()
        self._pending = _Pending(touches={}, repairs=set(), last_flush=time.monotonic())
        self._sweeper = None  # threads do not survive fork
        self._pid = os.getpid()
        self._forks = FORKS[0]

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for spawn-started workers: the child opens the same root with the same limits,
        # and sees what this process has put (its pending rows are indexed first).
        if not self._closed and self._pid == os.getpid():
            self._publish()
        args = dict(self._init_args)
        args.update(max_size=self.max_bytes, target_size=self.target_bytes, ttl=self.ttl_s, sweep=False)
        return args

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, max_size={self.max_bytes}, target={self.target_bytes})"

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush buffered access times and statistics and release this process's handles."""
        if self._closed:
            return
        if self._sweeper is not None and self._pid == os.getpid():
            self._stop_sweep.set()
            self._sweeper.join()
        if self._pid == os.getpid() and not self.readonly:
            self._timer_wake.set()  # the timer thread sees the cache closed and ends
            try:
                self._commit_batch()
                with self._index.transaction():
                    self._reap_pending_locked()
                    self._flush_locked()
            except (sqlite3.Error, OSError, IndexFull, CacheError):
                pass
        self._close_handles()

    def _close_handles(self) -> None:
        self._closed = True
        if self._pid == os.getpid():
            wake = getattr(self, "_timer_wake", None)
            if wake is not None:
                wake.set()
            unindexed = bool(getattr(self, "_batch", None))
            if getattr(self, "_slot", None) is not None and not unindexed:
                # With puts still not indexed (the index could not be written), the slot stays:
                # it keeps counting their bytes, and the next opener replays the journal.
                try:
                    with self._mutex:
                        self._ledger.free(self._slot)  # type: ignore[arg-type]
                except OSError:
                    pass
                self._slot = None
            if getattr(self, "_journal_fd", -1) >= 0:
                os.close(self._journal_fd)
                self._journal_fd = -1
                if not unindexed and self._owner is not None:
                    _unlink_quiet(self._journal_path(self._owner.token))
            if getattr(self, "_owner", None) is not None:
                self._owner.release()  # type: ignore[union-attr]
            self._index.close()
            self._mutex.close()
            self._index_mutex.close()
            self._evict_mutex.close()
            self._ledger.close()
            self.events.close()

    def _writer_slot(self) -> int:
        """This process's ledger slot, liveness token and journal, made on its first write.

        Never called with the mutex held: only the slot's claim is under it. (The token file and
        the journal, two file creations, made under it made each new writer's first hold last
        100-500 us: with 12-16 processes that one hold each was the p99 of a short run.)
        """
        slot = self._slot
        if slot is not None:
            return slot
        with self._slot_lock:  # (threads of this process: one token, one journal, one slot)
            if self._slot is not None:
                return self._slot
            if self._owner is None:
                self._owner = OwnerLock(self._owners)  # locked before anything names its token
                _crash_point("writer_after_token")
            if self._journal_fd < 0:
                self._journal_fd = os.open(
                    self._journal_path(self._owner.token), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
                )
            with self._mutex:
                slot = self._ledger.claim(self._owner.token)
            if slot is None:
                self._recover()  # dead writers' slots
                with self._mutex:
                    slot = self._ledger.claim(self._owner.token)
            if slot is None:
                raise CacheBusy(
                    f"{self._ledger.slots} processes are writing to cache {self.root} already; use fewer writers"
                )
            self._slot = slot
            _index_pending_at_exit(self)
            return slot

    def _journal_path(self, token: str) -> str:
        return os.path.join(self._journal_dir_s, f"{token}.log")

    def _estimate(self) -> int:
        """Entry bytes on disk plus every process's writes in flight (what the bound is on), or more:
        never less. From the counters of the last _refresh_estimate, without an index read. Exact
        under the mutex; outside it, a hint."""
        released0, indexed0, evicted0, _t = self._est
        ledger = self._ledger
        return indexed0 + ledger.totals()[0] + (ledger.released_total() - released0) - (ledger.evicted_total() - evicted0)

    # ------------------------------------------------------------------------------ accounting
    def _charge(self, size: int) -> int:
        b = self.block_bytes
        return -(-size // b) * b

    def _check_fits(self, key: str, charge: int) -> None:
        if charge > self.max_bytes:
            raise CacheFull(
                f"value for key {key!r} takes {format_size(charge)} on disk but max_size is "
                f"{format_size(self.max_bytes)}; raise max_size or split the value"
            )

    def _eviction_batch(self, c: Counters) -> int:
        """How far below the target an eviction goes: at least ~32 average entries, so that its
        fixed cost (three transactions, an event) is shared, but never more than a quarter of the target.

        Measured (bench_cache, 12 processes): 32 rather than 16 average entries cut the CPU per put
        by about 10 %: each round makes the other writers queue for the evictor lock once, so
        half as many rounds is half as many of those waves."""
        average = c.live_bytes // c.entries if c.entries else 0
        return min(self.target_bytes // 4, max(self.evict_batch_bytes, 32 * average))

    def _refresh_estimate(self) -> Counters:
        """Read the index counters *outside* the mutex, after the ledger's released_total and before
        its evicted_total.

        Every byte that leaves the ledger into the index after that first read is added back by
        the reserver (it may or may not be in the counters read), and only victims counted by an
        evictor after the counters were read are taken off (see Ledger.evicted_total), so an
        estimate made from this triple, however old, over-counts and never under-counts; it is
        refreshed when it says no (or after _ESTIMATE_S).
        """
        released = self._ledger.released_total()
        c = self._index.counters()
        self._est = (released, c.live_bytes + c.replaced_bytes, self._ledger.evicted_total(), time.monotonic())
        # Pending bytes cannot be evicted until indexed: a batch ends at 1/16 of the target.
        self._batch_cap = max(self.block_bytes, self.target_bytes // 16)
        return c

    def _reserve(self, key: str, charge: int) -> tuple[int, str]:
        """Reserve ``charge`` bytes for a write; returns (ledger slot, .part file name)."""
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.0005
        while True:
            try:
                granted = self._try_reserve(key, charge, deadline)
            except IndexFull as exc:
                if exc.retryable:
                    continue  # the disk reserve was given up: now the eviction can commit
                raise self._index_full_error() from None
            if granted is not None:
                self._after_commit()
                return granted
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def _reserve_within(self, slot: int, charge: int, limit: int) -> bool:
        """The per-put hold of the mutex: one ledger call, with the index counters of the last
        _refresh_estimate folded into one number before it (see _estimate)."""
        released0, indexed0, evicted0, _t = self._est
        base = indexed0 - released0 + evicted0
        with self._mutex:
            return self._ledger.reserve_within(slot, charge, base, limit)

    def _granted(self, slot: int) -> tuple[int, str]:
        # (A counter, not ``+= 1``: this runs outside the mutex, and threads must not share a name.)
        return slot, f"{self._owner.token}.{next(self._part_seq)}.part"  # type: ignore[union-attr]

    def _try_reserve(self, key: str, charge: int, deadline: float) -> tuple[int, str] | None:
        """One attempt: reserve, evicting first as needed; None when others' writes must finish first.

        The per-put critical section (the reservation mutex) is one ledger call (see
        _reserve_within). Eviction runs outside it, under its own lock.
        """
        slot = self._writer_slot()
        for fresh in (False, True):
            if fresh or time.monotonic() - self._est[3] > _ESTIMATE_S:
                self._refresh_estimate()
            if self._reserve_within(slot, charge, self.target_bytes):
                return self._granted(slot)
        # No room under the target: make some, one evictor at a time, outside the mutex. (The
        # estimate just read stays good through it: evictions are subtracted from it.)
        exhausted = self._make_room(charge)
        if self._reserve_within(slot, charge, self.max_bytes):
            return self._granted(slot)
        # Everything evictable is gone. What is left is pinned, or other writers' bytes in flight.
        if self._recover():
            return None  # a dead writer's reservation was holding that room: try again at once
        c = self._index.counters()
        reserved, writers = self._ledger.totals()
        pinned = c.live_bytes + c.replaced_bytes
        # Only when this eviction found every remaining entry pinned: other writers may have
        # filled the room it made before this process could reserve it (then: wait and retry).
        if exhausted and charge > self.max_bytes - pinned and reserved == 0:
            raise CacheFull(
                f"value for key {key!r} ({format_size(charge)}) cannot fit: {format_size(pinned)} of "
                f"max_size {format_size(self.max_bytes)} is pinned by readers; release pins or raise max_size"
            )
        if reserved and reserved == self._own_bytes():
            self._commit_batch()  # our own puts not yet indexed are what holds the room: index them
            return None
        if time.monotonic() > deadline:
            raise CacheBusy(
                f"no room for key {key!r} ({format_size(charge)}) after {self.wait_timeout:g}s: "
                f"{format_size(reserved)} in flight by {writers} writes and {format_size(pinned)} pinned; "
                f"raise max_size or use fewer concurrent writers"
            )
        return None

    def _own_bytes(self) -> int:
        if self._slot is None:
            return 0
        s = self._ledger.read(self._slot)
        return 0 if s is None else s.reserved_bytes

    def _make_room(self, charge: int) -> bool:
        """Evict to below the target, in batches, under the evictor lock (never the reservation mutex).

        One evictor at a time; the others wait for its lock (measured: waiting beats polling
        for the room it frees, which takes the reservation mutex and the index lock away from
        the evictor), then find room and return at once. True when the eviction found nothing
        more it could remove (every entry left is pinned).
        """
        with self._evict_mutex:
            # (The estimate was read just before; what other evictors removed since is taken off.)
            if self._estimate() + charge <= self.target_bytes:
                return False  # another evictor made room while we waited for its lock
            c = self._refresh_estimate()
            if self._reclaim_dead_writers():
                c = self._refresh_estimate()
            if self._estimate() + charge <= self.target_bytes:
                return False  # a dead writer's reservation (or an old estimate) was holding that room
            if self._pending.touches or self._pending.hits or self._pending.misses:
                with self._index.transaction():
                    self._flush_locked()  # this process's recent reads count for the LRU order
            goal = self.target_bytes - self._eviction_batch(c) - charge
            report = self._evict_unlocked(goal, "target", time.time())
            if self._batch and self._index.counters().entries <= report.pinned_skipped:
                # Not enough went: our own pending puts (newest, not evictable until indexed) may be
                # what is left. Index them and evict again. (Not before: indexing them frees nothing.)
                self._commit_batch()
                report = self._evict_unlocked(goal, "target", time.time())
            return self._index.counters().entries <= report.pinned_skipped

    def _reclaim_dead_writers(self) -> bool:
        """Before evicting live entries to make room, make sure no dead writer's reservation holds it.

        Each token is checked at most once a second (a dead process stays dead), so the cost
        on the eviction path is a dictionary lookup per writer.
        """
        now = time.monotonic()
        dead = False
        for slot in self._ledger.used():
            if slot.index == self._slot or not (slot.reserved_bytes or slot.writes):
                continue
            if now - self._liveness_checked.get(slot.token, -1e9) < 1.0:
                continue
            self._liveness_checked[slot.token] = now
            if not owner_alive(self._owners, slot.token):
                dead = True
                break
        if dead:
            self._recover()
        return dead

    def _abort(self, slot: int, part: str, charge: int) -> None:
        _unlink_quiet(self._tmp_pfx + part)  # first the bytes, then the count that covered them
        with self._mutex:
            self._ledger.release(slot, charge)

    # ------------------------------------------------------------------------------------ put
    def put(self, key: str, data: bytes | bytearray | memoryview) -> Path:
        """Store ``data`` under ``key`` and return the entry's path. Replaces an existing entry atomically.

        This process sees the new value at once; other processes within ``batch_interval``
        seconds (when this process's batch of index rows is committed). A crash after the
        return keeps the value: its journal record lets recovery index it.
        """
        self._ensure_open()
        name = key_to_name(key)  # (validates the key)
        if isinstance(data, str) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise CacheError(f"value for key {key!r} is a {type(data).__name__}; put() takes bytes (use put_file for paths)")
        self._ensure_writable()
        view = memoryview(data).cast("B")
        size = view.nbytes
        charge = self._charge(size)
        self._check_fits(key, charge)
        slot, part = self._reserve(key, charge)
        _crash_point("put_after_reserve")
        part_path = self._tmp_pfx + part
        try:
            fd = os.open(part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                written = 0
                if _CRASH_AT == "put_mid_write":
                    os.write(fd, view[: size // 2])
                    _crash_point("put_mid_write")
                while written < size:
                    written += os.write(fd, view[written:])
                ino = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            checksum = xxhash.xxh3_64_hexdigest(view)
        except BaseException as exc:
            self._abort(slot, part, charge)
            raise self._write_error(exc, key, size) from None
        path = self._place(slot, _Put(key, name, size, charge, checksum, ino, time.time()), part)
        return path

    def put_file(self, key: str, src_path: str | os.PathLike, move: bool = False) -> Path:
        """Store the file at ``src_path`` under ``key``. With ``move=True`` the source is removed
        after the entry is in place (hard-linked, not copied, when on the same filesystem)."""
        self._ensure_open()
        self._ensure_writable()
        key = validate_key(key)
        src = Path(src_path)
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise CacheError(f"source file '{src}' for key {key!r} does not exist") from None
        except OSError as exc:
            raise CacheError(f"source file '{src}' for key {key!r} cannot be read ({exc.strerror})") from None
        if not os.path.isfile(src):
            raise CacheError(f"source '{src}' for key {key!r} is not a regular file")
        size = st.st_size
        charge = self._charge(size)
        self._check_fits(key, charge)
        name = key_to_name(key)
        slot, part = self._reserve(key, charge)
        part_path = self._tmp_pfx + part
        try:
            linked = False
            if move:
                try:
                    os.link(src, part_path)
                    linked = True
                except OSError:
                    linked = False
            if linked:
                checksum, ino = _hash_file(part_path, size)
            else:
                checksum, ino = _copy_and_hash(src, part_path, size)
        except BaseException as exc:
            self._abort(slot, part, charge)
            raise self._write_error(exc, key, size) from None
        path = self._place(slot, _Put(key, name, size, charge, checksum, ino, time.time()), part)
        if move:
            try:
                os.unlink(src)
            except FileNotFoundError:
                pass
        return path

    def _write_error(self, exc: BaseException, key: str, size: int) -> BaseException:
        if _is_disk_full(exc):
            return CacheDiskFull(
                f"disk full while writing key {key!r} ({format_size(size)}) under {self.root}: "
                f"free space on that filesystem or lower max_size ({format_size(self.max_bytes)}); nothing was stored"
            )
        if isinstance(exc, CacheError) or not isinstance(exc, OSError):
            return exc
        return CacheError(f"cannot write key {key!r} under {self.root}: {exc.strerror or exc}; nothing was stored")

    def _place(self, slot: int, rec: "_Put", part: str) -> Path:
        """Journal the entry, rename the written ``.part`` into place, and queue its index row.

        No cross-process lock: the reservation still counts the bytes (until the batch holding
        the row is committed), the journal record written *before* the rename lets recovery
        index the file if this process dies before its batch commits, and the rename never
        replaces an existing file (RENAME_NOREPLACE, or link + unlink), so two processes
        putting one key never clobber each other's file: the second takes a versioned name.
        """
        source = self._tmp_pfx_b + part.encode()
        with self._batch_lock:
            # The key's own name first, with no look before: the rename reports EEXIST itself when
            # that name holds a file (committed or pending), and then a versioned name is tried. (Its
            # journal record, naming a file that is not this inode, is dropped by any replay.)
            base = name = rec.name
            for _attempt in range(64):
                if name is not rec.name:
                    rec = rec._replace(name=name)
                try:
                    os.write(self._journal_fd, _journal_line(rec))
                    _crash_point("put_after_journal")
                    _rename_noreplace(source, self._root_pfx_b + name.encode())
                    break
                except FileExistsError:
                    name = self._versioned(base)
                except BaseException as exc:
                    # Nothing of it is visible; a record without its file is dropped by a replay.
                    self._abort(slot, part, rec.charge)
                    raise self._write_error(exc, rec.key, rec.size) from None
            else:  # pragma: no cover - 64 random names taken
                self._abort(slot, part, rec.charge)
                raise CacheError(f"no free file name for key {rec.key!r} under {self.root}; nothing was stored")
            _crash_point("put_after_rename")
            arm = not self._batch  # the timer, once per batch: it commits what is pending when it fires
            if arm:
                self._batch_t0 = time.monotonic()
                self._batch_bytes = 0
            self._batch.append(rec)
            self._batch_keys[rec.key] = rec
            self._batch_bytes += rec.charge
            # Pending bytes cannot be evicted until indexed: a batch also ends at 1/16 of the
            # target (a writer that finds no room indexes its batch before it evicts or waits).
            due = (
                len(self._batch) >= self.batch_puts
                or self._batch_bytes >= self._batch_cap
                or time.monotonic() - self._batch_t0 >= self.batch_interval
            )
        if due:
            self._commit_batch()
        elif arm:
            self._arm_timer()
        return self._entry_path(name)

    def _entry_path(self, name: str) -> Path:
        """``self.root / name``, from a Path per shard made once (pathlib's ``/`` costs microseconds per put)."""
        shard, _, leaf = name.partition("/")
        base = self._shard_paths.get(shard)
        if base is None:
            base = self._shard_paths[shard] = self.root / shard
        return _child(base, leaf)  # (a name is always shard/leaf: keys.key_to_name, versioned_name)

    def _versioned(self, name: str) -> str:
        seq = next(self._part_seq)
        return versioned_name(name, xxhash.xxh3_64_hexdigest(f"{os.getpid()}.{time.time_ns()}.{seq}".encode())[:12])

    def _arm_timer(self) -> None:
        """Commit a batch that waits longer than ``batch_interval`` even if this process puts nothing more.

        One thread per open cache and process, started once and woken per batch (measured: a
        ``threading.Timer`` per batch made every few puts wait for a new thread to be scheduled).
        """
        self._timer_wake.set()
        if self._timer is None or not self._timer.is_alive():
            t = threading.Thread(
                target=_batch_timer, args=(weakref.ref(self), self._timer_wake, self.batch_interval, self._pid),
                daemon=True, name="cachewatch-batch",
            )
            self._timer = t
            t.start()

    def _commit_batch_quietly(self) -> None:
        try:
            if not self._closed and self._pid == os.getpid():
                self._commit_batch()
        except Exception:  # pragma: no cover - retried at the next put, flush or close
            log.debug("committing the index batch of %s failed", self.root, exc_info=True)

    def _commit_batch(self) -> bool:
        """Index this process's renamed entries in one transaction, then stop counting them in the ledger.

        True when nothing is left pending. On an index error the batch stays pending (its
        files in place, still counted, still journaled) and is tried again later.
        """
        with self._batch_lock:
            if not self._batch:
                return True
            batch = list(self._batch)
            replaced: list[Row] = []

            def apply() -> None:
                with self._index.transaction():
                    self._reap_pending_locked()  # old versions unlinked earlier: their rows go now
                    replaced[:] = self._apply_puts_locked(batch, replay=False)
                    self._flush_locked()  # this process's reads, in the same transaction
                    _crash_point("put_before_commit")

            try:
                self._retrying(apply)
            except (IndexFull, CacheDiskFull, sqlite3.Error, OSError) as exc:
                self._batch_t0 = time.monotonic()  # not at every call: at the next interval
                log.warning("cache %s: %d new entries not indexed yet (%s); retrying later", self.root, len(batch), exc)
                return False
            _crash_point("put_after_index")
            # Only now, indexed, stop counting the bytes in the ledger (one mutex hold per batch).
            with self._mutex:
                self._ledger.release(self._slot, sum(r.charge for r in batch), len(batch))  # type: ignore[arg-type]
            del self._batch[: len(batch)]
            for rec in batch:
                if self._batch_keys.get(rec.key) is rec:
                    del self._batch_keys[rec.key]
                    self._batch_touched.pop(rec.key, None)
            if not self._batch and not self._evicting:
                # Every record is in the index: the journal starts over (the records are kept until
                # here, so a crash before this line replays them again, which changes nothing).
                os.ftruncate(self._journal_fd, 0)
        self._forget_replaced(replaced)
        return True

    def _forget_replaced(self, replaced: list[Row]) -> None:
        """Old versions are REPLACED rows now, still counted: unlink their files outside any lock
        (unless a reader pins them); the rows, which then only over-count, go at the next transaction."""
        for old in replaced:
            if _unlink_unless_pinned(self._root_pfx + old.name, old.ino):
                self._gone_files.add((old.id, old.name, old.ino))  # its row goes without looking at that name again
            self._pending_reap.append(old)

    def _apply_puts_locked(self, recs: "list[_Put]", *, replay: bool) -> list[Row]:
        """Inside a transaction: index journaled entries whose file is in place; returns the old
        versions they replaced (now REPLACED rows, files not yet unlinked).

        A record whose file is not there with its inode is dropped (it never got renamed, or
        has gone since). ``replay`` (a dead writer's journal): the file's content is checked
        against the record, a record already indexed is skipped, and one older than the key's
        indexed entry loses to it (its file is removed).
        """
        replaced: list[Row] = []
        present: list[_Put] = []
        for rec in recs:
            try:
                st = os.lstat(self._root_pfx + rec.name)
            except FileNotFoundError:
                continue
            if st.st_ino == rec.ino and st.st_size == rec.size:
                present.append(rec)
        if not replay and present:
            # This process's own puts, never indexed before: keys without a LIVE row (the common
            # case) all go in with one call, no lookup each. The others take the general path below.
            every = self._index.insert_new_live_many(
                [(r.key, r.name, r.size, r.charge, r.checksum, r.ino, r.created) for r in present]
            )
            rest: list[_Put] = []
            for rec in present:
                if every and not self._batch_touched:
                    continue
                row = self._index.live_row(rec.key)
                if row is None or row.name != rec.name or row.ino != rec.ino:
                    rest.append(rec)  # the key had a LIVE row (another one, or an earlier put in this batch)
                    continue
                touched = self._batch_touched.get(rec.key)
                if touched is not None:
                    self._index.touch([(touched, row.id)])  # read while pending: its LRU time
            present = rest
        for rec in present:
            path = self._root_pfx + rec.name
            old = self._index.live_row(rec.key)
            if old is not None and old.name == rec.name and old.ino == rec.ino:
                continue  # indexed already
            if replay:
                if any(r.ino == rec.ino for r in self._index.rows_with_name(rec.name, states=(LIVE, REPLACED))):
                    continue  # indexed already (a record whose batch did commit before its writer died)
                try:
                    checksum, _ino = _hash_file(path, rec.size)
                except OSError:
                    continue
                if checksum != rec.checksum:
                    # Not the journaled content (the inode was reused: another file now). Not ours
                    # to index nor to remove; if nobody owns it, the sweep will.
                    continue
            if old is not None and old.created > rec.created:
                # Another process put this key later and its row is in already: ours is an old
                # version at once (a REPLACED row: counted, and kept while a reader pins it).
                row_id = self._index.insert_replaced(rec.key, rec.name, rec.size, rec.charge, rec.checksum, rec.ino, rec.created)
                replaced.append(Row(row_id, rec.key, rec.name, rec.size, rec.charge, REPLACED, None, None, rec.checksum, rec.ino, rec.created, rec.created))
                continue
            if old is not None:
                self._index.mark_replaced(old.id)  # readers of the old file keep it; it stays counted
                replaced.append(old._replace(state=REPLACED))
            row_id = self._index.insert_live(rec.key, rec.name, rec.size, rec.charge, rec.checksum, rec.ino, rec.created)
            touched = None if replay else self._batch_touched.get(rec.key)
            if touched is not None:
                self._index.touch([(touched, row_id)])
        return replaced

    def _reap_pending_locked(self) -> None:
        """Inside a transaction: remove old versions this process replaced, unless someone reads them."""
        if self._pending_reap:
            rows, self._pending_reap = self._pending_reap, []
            self._reap_rows_locked(rows)

    # ----------------------------------------------------------------------------------- reads
    def _pending_put(self, key: str) -> "_Put | None":
        """This process's put of ``key`` not indexed yet (through this object or another one on the root)."""
        rec = self._batch_keys.get(key) if self._batch_keys else None
        if rec is None and _PEERS_OPEN[0] > 1:
            for peer in self._peers():
                rec = peer._batch_keys.get(key)
                if rec is not None:
                    break
        return rec

    def _peers(self) -> "list[Cache]":
        return [c for c in list(_OPEN_CACHES) if c is not self and c._root_s == self._root_s and not c._closed and c._pid == self._pid]

    def _lookup(self, key: str) -> Row | None:
        rec = self._pending_put(key)
        if rec is not None:
            # Put by this process, not indexed yet: its own reads see it at once.
            row: Row | None = Row(_PENDING_ID, key, rec.name, rec.size, rec.charge, LIVE, None, None, rec.checksum, rec.ino, rec.created, rec.created)
        else:
            row = self._index.live_row(key)
        if row is not None and self.ttl_s is not None and row.created + self.ttl_s < time.time():
            return None
        return row

    def _record(self, row: Row | None, key: str, *, missing_file: bool = False) -> None:
        if self.readonly:
            return  # an inspection counts no hits and moves nothing in the LRU order
        p = self._pending
        if row is None or missing_file:
            p.misses += 1
            if missing_file and row is not None:
                p.repairs.add(row.name)  # type: ignore[union-attr]
        else:
            p.hits += 1
            if row.id != _PENDING_ID:
                p.touches[row.id] = time.time()
            else:  # not indexed yet: its row gets this access time when the batch commits
                self._batch_touched[key] = time.time()
        if len(p.touches) >= 256 or time.monotonic() - p.last_flush >= self.flush_interval:
            try:
                with self._index.transaction():
                    self._flush_locked()
            except (sqlite3.Error, IndexFull):
                pass  # access times are advisory; try again at the next flush

    def get(self, key: str) -> Path | None:
        """The entry's path, or None. Counts a hit or miss and marks the entry used (LRU).

        The path is not pinned: another process may evict it before you open it. Use
        :meth:`read` or :meth:`pin` when that matters.
        """
        self._ensure_open()
        key = validate_key(key)
        row = self._lookup(key)
        if row is None:
            self._record(None, key)
            return None
        if not os.path.exists(self._root_pfx + row.name):
            self._record(row, key, missing_file=True)
            return None
        self._record(row, key)
        return self._entry_path(row.name)

    def read(self, key: str) -> bytes | None:
        """The entry's bytes, or None. The file is pinned while it is read."""
        self._ensure_open()
        key = validate_key(key)
        with self._open_pinned(key) as opened:
            if opened is None:
                return None
            fd, _ = opened
            with os.fdopen(os.dup(fd), "rb") as fh:
                return fh.read()

    @contextmanager
    def pin(self, key: str) -> Iterator[Path]:
        """``with cache.pin(key) as path:`` the entry cannot be evicted until the block ends.

        A pin is a shared ``flock`` on the file: it costs no index write and is released by the
        kernel if this process dies. Raises :class:`CacheMiss` (a ``KeyError``) for a missing key.
        """
        self._ensure_open()
        key = validate_key(key)
        with self._open_pinned(key) as opened:
            if opened is None:
                raise CacheMiss(f"key {key!r} is not in cache {self.root}")
            yield opened[1]

    @contextmanager
    def _open_pinned(self, key: str) -> Iterator[tuple[int, Path] | None]:
        for _attempt in range(8):
            row = self._lookup(key)
            if row is None:
                self._record(None, key)
                yield None
                return
            at = self._root_pfx + row.name  # (a str: pathlib's joins cost microseconds per read)
            try:
                fd = os.open(at, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._record(row, key, missing_file=True)
                yield None
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                # Between lookup and lock the file may have been evicted or replaced. Once we hold
                # the shared lock nobody can unlink or rename this name, so check it names our inode.
                if not _same_file(at, os.fstat(fd)):
                    continue
                self._record(row, key)
                yield fd, self._entry_path(row.name)
                return
            finally:
                os.close(fd)
        self._record(None, key)
        yield None

    def __contains__(self, key: object) -> bool:
        """Membership without counting a hit or miss and without touching the LRU order."""
        self._ensure_open()
        key = validate_key(key)
        row = self._lookup(key)
        return row is not None and os.path.exists(self.root / row.name)

    def __len__(self) -> int:
        self._ensure_open()
        self._publish()
        return self._index.counters().entries

    @_retry_when_index_full
    def delete(self, key: str) -> bool:
        """Remove an entry; True if it existed.

        The key is gone at once. A file someone has pinned stays readable at its path until the
        pin is released, and its bytes stay counted until then.
        """
        self._ensure_open()
        self._ensure_writable()
        key = validate_key(key)
        if self._pending_put(key) is not None:
            self._publish()  # this process's pending put of it is what there is to delete
        # No reservation mutex: a REPLACED row stays counted in the index until its file is gone.
        # Committed as REPLACED first, then the file goes: a kill -9 in between leaves a counted
        # REPLACED row (reaped by the next process), never a LIVE row without its file.
        with self._index.transaction():
            row = self._index.live_row(key)
            if row is None:
                return False
            self._index.mark_replaced(row.id)
        with self._index.transaction():
            self._reap_rows_locked([row._replace(state=REPLACED)])
        return True

    def _publish(self) -> None:
        """Commit this process's pending index rows (before a report or a count that must see them)."""
        if self.readonly:
            return
        if self._batch:
            self._commit_batch()
        if _PEERS_OPEN[0] > 1:
            for peer in self._peers():  # other Cache objects of this process on the same root
                if peer._batch:
                    peer._commit_batch()
        if self._pending_reap:  # old versions whose files went: their rows only over-count now
            with self._index.transaction():
                self._reap_pending_locked()

    # --------------------------------------------------------------------------- maintenance
    def _flush_locked(self) -> None:
        p = self._pending
        if p.touches:
            self._index.touch([(t, i) for i, t in p.touches.items()])
            p.touches.clear()
        if p.hits or p.misses:
            self._index.add_counters(hits=p.hits, misses=p.misses)
            p.hits = p.misses = 0
        if p.repairs:
            repairs, p.repairs = p.repairs, set()
            for name in repairs:
                self._repair_name_locked(name)
        p.last_flush = time.monotonic()

    @_retry_when_index_full
    def flush(self) -> None:
        """Index this process's new entries and write its buffered access times and hit/miss counts now.

        After it returns, every other process sees the entries this one has put.
        """
        self._ensure_open()
        if self.readonly:
            return
        self._commit_batch()
        with self._index.transaction():
            self._flush_locked()

    def _repair_name_locked(self, name: str, *, unlink_unowned: bool = False) -> None:
        """Make the index and the disk agree about one file name (inside a transaction).

        Rows whose file is gone or is another inode are dropped. A file that no row owns is
        removed only with ``unlink_unowned`` (a dead writer's, named by its slot): a live
        writer's renamed file waits for its batch and is not the repairer's to remove.
        Reservations (``WRITING`` rows) are left alone: their file is not in place yet.
        """
        path = self.root / name
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        owned = False
        for row in self._index.rows_with_name(name, states=(LIVE, REPLACED)):
            if st is not None and st.st_ino == row.ino:
                owned = True
                continue
            self._index.delete_rows([row.id])
        if st is not None and not owned and unlink_unowned:
            _unlink_quiet(path)

    def _recover(self, *, startup: bool = False, limits: tuple[Any, ...] | None = None) -> int:
        """Reclaim what dead processes left (see _recover_locked); returns how many things.

        Under the reservation mutex. A dead writer's ledger slot is freed only *after* the
        transaction that indexed its journaled entries has committed: killed in between, the
        slot still counts them (an over-count) and the next recovery replays the journal again,
        which finds them indexed and changes nothing.
        """
        with self._mutex:
            with self._index.transaction():
                if limits is not None:
                    self._load_limits_locked(*limits)
                recovered, slots, journals, replaced = self._recover_locked(startup=startup)
            for index in slots:
                self._ledger.free(index)
            if slots or startup:
                self._ledger.recount()  # a writer killed inside a ledger update left the totals high
            for path in journals:
                _unlink_quiet(path)
        if replaced:
            self._forget_replaced(replaced)
            with self._index.transaction():
                self._reap_pending_locked()
        return recovered

    def _recover_locked(self, *, startup: bool = False) -> tuple[int, list[int], list[str], list[Row]]:
        """Inside the mutex and a transaction: replay dead writers' journals, drop their ``.part``
        files, reap released old versions. Returns (how many things, slots and journals to free
        once committed, old versions the replay replaced).

        At start-up also forget the token files of processes that died without closing the cache.
        """
        recovered = 0
        alive: dict[str, bool] = {}
        if self._owner is not None:
            alive[self._owner.token] = True

        def is_alive(token: str | None) -> bool:
            if token not in alive:
                alive[token] = owner_alive(self._owners, token)  # type: ignore[index]
            return alive[token]  # type: ignore[index]

        # Reap first: rows this transaction turns REPLACED below must keep their files until it commits.
        recovered += self._reap_replaced_locked()
        slots: list[int] = []
        journals: list[str] = []
        replaced: list[Row] = []
        dead_tokens: set[str] = set()
        for slot in self._ledger.used():
            if slot.index == self._slot or is_alive(slot.token):
                continue
            # A writer died. What it renamed into place is in its journal; its reservation goes after.
            if slot.intent:  # a ledger slot from before the journal
                self._repair_name_locked(slot.intent, unlink_unowned=True)
            dead_tokens.add(slot.token)
            slots.append(slot.index)
            recovered += 1
        try:
            journal_files = [e.name for e in os.scandir(self._journal_dir_s)]
        except FileNotFoundError:
            journal_files = []
        for fname in journal_files:
            token = fname.removesuffix(".log")
            if token in dead_tokens or not is_alive(token):
                path = os.path.join(self._journal_dir_s, fname)
                for kind, rec in _read_journal(path):
                    if kind == "P":
                        replaced += self._apply_puts_locked([rec], replay=True)
                    else:
                        self._settle_evicted_locked(rec)
                journals.append(path)
        for row in self._index.rows_in_state(WRITING):  # written by cachewatch before the ledger existed
            self._index.delete_rows([row.id])
            recovered += 1
        try:
            parts = list(os.scandir(self._tmp)) + list(os.scandir(self._trash))
        except FileNotFoundError:
            parts = []
        for entry in parts:
            token = entry.name.split(".", 1)[0]
            if not is_alive(token):
                _unlink_quiet(Path(entry.path))
                recovered += 1
        if startup:
            for entry in list(os.scandir(self._owners)):
                token = entry.name.removesuffix(".lock")
                if token not in alive:
                    is_alive(token)  # removes the file of a dead owner
        return recovered, slots, journals, replaced

    def _reap_replaced_locked(self) -> int:
        """Remove old versions (overwritten, deleted or evicted) whose readers are gone."""
        if self._index.counters().replaced_bytes == 0 and not self._index.rows_in_state(REPLACED):
            return 0
        return self._reap_rows_locked(self._index.rows_in_state(REPLACED))

    def _reap_rows_locked(self, rows: list[Row]) -> int:
        """Inside a transaction: unlink the files of these REPLACED rows that nobody pins, and drop the rows.

        Unlinking inside a transaction is safe for REPLACED rows only: if the transaction is
        lost, a REPLACED row without its file is invisible to readers and the next reaping drops it.
        """
        reaped = 0
        pending: dict[tuple[str, int], float] | None = None
        for row in rows:
            gone = (row.id, row.name, row.ino) in self._gone_files
            self._gone_files.discard((row.id, row.name, row.ino))
            if not self._index.replaced_row(row):
                continue  # another process reaped it (and the id may belong to a new row now)
            if gone:
                # This process unlinked its file already: the name may hold a new put's file now,
                # even with the same inode number (inodes are reused), so it is not looked at.
                self._index.delete_replaced(row)
                reaped += 1
                continue
            path = self._root_pfx + row.name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = -1
            except OSError:
                continue
            try:
                if fd >= 0:
                    if not try_exclusive(fd):
                        continue  # a reader holds it: it stays, counted, until a later reaping
                    st = os.fstat(fd)
                    if pending is None:
                        pending = self._pending_files()
                    if pending.get((row.name, st.st_ino), -1.0) > row.created:
                        pass  # a writer's new file at a freed name (a reused inode): not this row's
                    elif st.st_ino == row.ino and _same_file(path, st):  # (not its size: verify drops truncated files)
                        os.unlink(path)
                        if reaped == 0:
                            _crash_point("evict_mid_reap")
            finally:
                if fd >= 0:
                    os.close(fd)
            self._index.delete_replaced(row)
            reaped += 1
        return reaped

    def _evict_unlocked(self, goal_used: int, reason: str, now: float, *, dry_run: bool = False) -> EvictionReport:
        """Evict least recently used unpinned entries until ``used_bytes <= goal_used``.

        Under the evictor lock (one evictor at a time), not the reservation mutex, and outside
        any transaction: each batch is its own pair of transactions, its unlinks between them.
        """
        if not dry_run:
            if self._pending_reap or self._index.counters().replaced_bytes:  # (a transaction only when needed)
                with self._index.transaction():
                    self._reap_pending_locked()
                    self._reap_replaced_locked()
            if self.ttl_s is not None:
                self._remove_locked(
                    lambda limit, offset: self._index.expired_candidates(now - self.ttl_s, limit, offset),  # type: ignore[operator]
                    None, "ttl", now, dry_run=False,
                )
        return self._remove_locked(self._index.lru_candidates, goal_used, reason, now, dry_run=dry_run)

    def _remove_locked(self, fetch: Any, goal_used: int | None, reason: str, now: float, *, dry_run: bool) -> EvictionReport:
        """Remove rows ``fetch`` yields until the goal, in batches (see docs/cache.md, "Eviction").

        Each batch: (1) one transaction turns the victims' rows LIVE -> REPLACED (still counted,
        no longer visible); (2) a second one unlinks the files nobody pins and drops those rows.
        A LIVE row's file is never touched before (1) commits, so a kill -9 at any point leaves
        every LIVE row with its file; REPLACED leftovers are reaped by the next process.
        """
        t0 = time.perf_counter()
        c = self._index.counters()
        size_before = c.live_bytes + c.replaced_bytes
        used = size_before + self._ledger.totals()[0]
        keys: list[str] = []
        files = freed = pinned = 0
        offset = 0
        if goal_used is None:
            batch = _BATCH
        else:  # usually one or two files: fetch about what is needed, then more if pins get in the way
            batch = max(4, min(_BATCH, (used - goal_used) // max(1, c.live_bytes // max(1, c.entries)) + 2))
        # A victim's file stays open, exclusively locked, from its pin test to its unlink (one open
        # and one lock per victim, not two): no reader can pin it in between, so the test holds.
        held: dict[int, int] = {}
        try:
            while goal_used is None or used > goal_used:
                rows = fetch(batch, offset)  # a read: the transaction below removes only rows still as read
                batch = min(_BATCH, batch * 2)
                if not rows:
                    break
                victims: list[Row] = []
                for row in rows:
                    if goal_used is not None and used <= goal_used:
                        break
                    path = self._root_pfx + row.name
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        fd = -1
                    except OSError:
                        offset += 1
                        continue
                    if fd >= 0:
                        try:
                            free = try_exclusive(fd)
                        except BaseException:
                            os.close(fd)
                            raise
                        if not free or dry_run:
                            os.close(fd)
                        else:
                            _hold_fd(held, row.id, fd)
                        if not free:
                            pinned += 1
                            offset += 1
                            continue
                    if dry_run:
                        offset += 1
                    victims.append(row)
                    used -= row.charge
                removed = victims if dry_run else self._evict_rows(victims, reason, held)
                if len(removed) < len(victims):
                    gone_ids = {row.id for row in removed}  # (a set: not a scan of the batch per victim)
                    for row in victims:
                        if row.id not in gone_ids:
                            used += row.charge  # changed meanwhile (another evictor, a delete): not ours to count
                for row in removed:
                    files += 1
                    freed += row.charge
                    if len(keys) < _KEYS_IN_EVENT:
                        keys.append(row.key)
        finally:
            for row_id in list(held):
                _close_held(held, row_id)
        report = EvictionReport(
            reason=reason,
            files=files,
            bytes=freed,
            size_before=size_before,
            size_after=size_before - freed,
            keys=tuple(keys),
            pinned_skipped=pinned,
            dry_run=dry_run,
            time=now,
            duration_s=time.perf_counter() - t0,
        )
        if files and not dry_run:
            self._log_event(
                "eviction",
                time_s=now,
                reason=reason,
                files=files,
                bytes=freed,
                size_before=report.size_before,
                size_after=report.size_after,
                max_bytes=self.max_bytes,
                target_bytes=self.target_bytes,
                keys=list(keys),
                keys_truncated=max(0, files - len(keys)),
                pinned_skipped=pinned,
                pid=os.getpid(),
            )
            if log.isEnabledFor(logging.INFO):
                log.info(report.describe(str(self.root)))
            self._restore_reserve = True  # after the commit: the WAL may need this room first
        return report

    def _evict_rows(self, victims: list[Row], reason: str, held: "dict[int, int] | None" = None) -> list[Row]:
        """Take ``victims`` out of the index in one transaction, then unlink their files outside any lock.

        Their bytes are counted in this process's ledger slot from *before* the transaction until
        the files are gone, and an ``E`` journal record per victim, written before the
        transaction, tells recovery which files to unlink if this process dies in between.
        Returns the rows this transaction removed (a row already changed is left alone).

        ``held``: row id -> the victim's file, open and exclusively locked since its pin test
        (a victim missing from it had no file then). Each is closed here, after its unlink.
        """
        if not victims:
            return []
        total = sum(r.charge for r in victims)
        slot = self._writer_slot()
        with self._mutex:
            # Grow first: from here to the unlink, counted twice or once. Counted as evicting, so that
            # other writers' estimates take these bytes off once their rows are gone (Ledger.evicted_total).
            self._ledger.count_evicting(slot, total)
        with self._batch_lock:
            self._evicting += 1
        # Bytes this eviction stops counting at the end: those of victims whose rows it did not
        # remove (all of them until its transaction commits: the rows still hold them), those
        # unlinked since the last release, and those indexed again (pinned meanwhile).
        undo = total
        gone_left = reinserted = 0
        committed = settled = False
        try:
            os.write(self._journal_fd, b"".join(_journal_line(_row_record(r), "E") for r in victims))
            with self._index.transaction():
                removed = self._index.delete_live_many(victims)  # (a row already changed is left alone)
                if removed:
                    self._index.add_counters(
                        evicted_files=len(removed), evicted_bytes=sum(r.charge for r in removed),
                        expired_files=len(removed) if reason == "ttl" else 0,
                    )
                    undo = total - sum(r.charge for r in removed)
            committed = True
            if held is not None and len(removed) < len(victims):
                gone_ids = {r.id for r in removed}
                for r in victims:  # not dropped (another evictor, a delete changed it): not ours, let readers in
                    if r.id not in gone_ids:
                        _close_held(held, r.id)
            _crash_point("evict_after_mark")
            pinned_since: list[Row] = []
            gone = 0
            for i, r in enumerate(removed):
                if held is not None:
                    _unlink_held(held, r, self._root_pfx + r.name)  # locked since its pin test: not pinned
                    gone += r.charge
                elif not _unlink_unless_pinned(self._root_pfx + r.name, r.ino):
                    pinned_since.append(r)
                else:
                    gone += r.charge
                if i == 0:
                    _crash_point("evict_mid_reap")
                if i % 4 == 3:
                    # Room as it frees, every few files: writers waiting for it need not wait for the whole batch.
                    with self._mutex:
                        self._ledger.add_bytes(slot, -gone, indexed=False)  # gone from disk, not into the index
                    gone = 0
            gone_left = gone
            if pinned_since:
                # A reader pinned one between the check and the unlink: it stays, as an old version
                # (a REPLACED row: counted by the index, reaped when the pin is gone).
                with self._index.transaction():
                    for r in pinned_since:
                        self._index.insert_replaced(r.key, r.name, r.size, r.charge, r.checksum or "", r.ino or 0, r.created)
                reinserted = sum(r.charge for r in pinned_since)
            settled = True
            return removed
        finally:
            with self._mutex:
                if undo:
                    self._ledger.uncount_evicting(slot, undo)
                if gone_left:
                    self._ledger.add_bytes(slot, -gone_left, indexed=False)
                if reinserted:
                    self._ledger.add_bytes(slot, -reinserted)  # back into the index: released_total grows
            with self._batch_lock:
                if settled or not committed:
                    # (Not settled: files out of the index are still on disk. Their bytes stay counted
                    # and their E records stay in the journal, for recovery after this process ends.)
                    self._evicting -= 1
                if not self._evicting and not self._batch and self._journal_fd >= 0:
                    os.ftruncate(self._journal_fd, 0)

    def _settle_evicted_locked(self, rec: "_Put") -> None:
        """Recovery, inside its transaction: a dead evictor's victim whose row is gone loses its file
        (or, pinned by a reader, becomes a counted REPLACED row); one whose row is still there stays."""
        path = self._root_pfx + rec.name
        try:
            if os.lstat(path).st_ino != rec.ino:
                return
        except FileNotFoundError:
            return
        if any(r.ino == rec.ino for r in self._index.rows_with_name(rec.name, states=(LIVE, REPLACED))):
            return  # its transaction never committed: still an entry
        if self._pending_files().get((rec.name, rec.ino), -1.0) > rec.created:
            return  # unlinked already; a writer's new file took the name (and the inode number)
        if not _unlink_unless_pinned(path, rec.ino):
            self._index.insert_replaced(rec.key, rec.name, rec.size, rec.charge, rec.checksum, rec.ino, rec.created)

    @_retry_when_index_full
    def evict(self, to: int | str | None = None, *, dry_run: bool = False) -> EvictionReport:
        """Evict least recently used entries until the cache holds at most ``to`` (default: the target).

        Pinned entries are skipped. With ``dry_run`` nothing is removed and the report says what would go.
        """
        self._ensure_open()
        try:
            goal = self.target_bytes if to is None else parse_size(to, what="to")
        except SizeError as exc:
            raise CacheError(str(exc)) from None
        if not dry_run:
            self._ensure_writable()
        with self._evict_mutex:
            now = time.time()
            if not self.readonly:
                self._commit_batch()
                with self._index.transaction():
                    self._flush_locked()
                if not dry_run:
                    self._recover()
            # `to` is about entries on disk; writes in flight are not the caller's to evict.
            return self._evict_unlocked(goal + self._ledger.totals()[0], "manual", now, dry_run=dry_run)

    @_retry_when_index_full
    def expire(self) -> EvictionReport:
        """Remove entries older than ``ttl`` now (also done by every eviction)."""
        self._ensure_open()
        if self.ttl_s is None:
            return EvictionReport(reason="ttl", files=0, bytes=0, size_before=0, size_after=0, time=time.time())
        self._ensure_writable()
        with self._evict_mutex:
            self._commit_batch()
            now = time.time()
            return self._remove_locked(
                lambda limit, offset: self._index.expired_candidates(now - self.ttl_s, limit, offset),  # type: ignore[operator]
                None, "ttl", now, dry_run=False,
            )

    @_retry_when_index_full
    def recover(self) -> int:
        """Reclaim reservations and files left by dead processes now (their journaled entries are indexed); returns how many."""
        self._ensure_open()
        self._ensure_writable()
        return self._recover()

    # ------------------------------------------------------------------------ orphan sweep
    def _maybe_start_sweep(self) -> None:
        last = self._index.get_meta("last_sweep")
        if last and time.time() - float(last) < _SWEEP_EVERY_S:
            return
        self._sweeper = threading.Thread(target=self._sweep_quietly, name="cachewatch-sweep", daemon=True)
        self._sweeper.start()

    def _sweep_quietly(self) -> None:
        try:
            self.sweep_orphans()
        except Exception:  # pragma: no cover - best effort in the background
            log.debug("orphan sweep of %s failed", self.root, exc_info=True)

    def sweep_orphans(self) -> tuple[int, int]:
        """Delete entry files that no index row knows (left by a lost index or hand edits).

        Only files inside the two-hex-digit shard directories are candidates; anything else
        under the root is left alone. Returns (files, bytes) removed. One process sweeps at a time.

        A file older than the index itself (its ctime before the index's ``created`` time) is
        never swept: this index has never seen it, so it is not an orphan of this index but the
        content of a lost one (``verify --repair`` re-indexes it).
        """
        self._ensure_open()
        self._ensure_writable()
        created_s = self._index.get_meta("created")
        if not created_s:
            return (0, 0)  # cannot tell which files this index has seen: delete nothing
        created = float(created_s)
        lock_fd = os.open(self._meta / "sweep.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return (0, 0)
            on_disk: list[str] = []
            for shard in os.scandir(self.root):
                if self._stop_sweep.is_set():
                    return (0, 0)
                if not (SHARD_RE.match(shard.name) and shard.is_dir(follow_symlinks=False)):
                    continue
                for entry in os.scandir(shard.path):
                    if not entry.is_dir(follow_symlinks=False):
                        on_disk.append(f"{shard.name}/{entry.name}")
            known = self._index.known_names()
            # Read after the listing: a file renamed into place but not indexed yet was journaled
            # before its rename, and its journal is emptied only after its row is committed.
            known |= self._journaled_names()
            files = freed = 0
            for name in on_disk:
                if name in known:
                    continue
                if self._stop_sweep.is_set():
                    return (files, freed)
                with self._index.transaction():
                    if self._index.row_for_name(name) is not None:
                        continue
                    path = self.root / name
                    try:
                        st = os.lstat(path)
                        if st.st_ctime < created:
                            continue
                        size = st.st_size
                        os.unlink(path)
                    except FileNotFoundError:
                        continue
                    files += 1
                    freed += size
            with self._index.transaction():
                self._index.set_meta("last_sweep", repr(time.time()))
                if files:
                    self._log_event("sweep", orphans=files, bytes=freed, pid=os.getpid())
                    log.info("Swept %d orphan files (%.1f MB) from cache %s", files, freed / 1e6, self.root)
            return files, freed
        finally:
            os.close(lock_fd)

    def _pending_files(self) -> dict[tuple[str, int], float]:
        """(name, inode) -> newest put time of every journaled put: a reaper that finds, at an old
        row's name, a file a writer journaled *after* that row's put is looking at a new file with
        a reused inode number, not the row's."""
        out: dict[tuple[str, int], float] = {}
        try:
            journals = [e.path for e in os.scandir(self._journal_dir_s)]
        except FileNotFoundError:
            return out
        for path in journals:
            for kind, rec in _read_journal(path):
                if kind == "P" and rec.created > out.get((rec.name, rec.ino), -1.0):
                    out[(rec.name, rec.ino)] = rec.created
        return out

    def _journaled_names(self) -> set[str]:
        """Names in every writer's journal: files renamed into place whose rows may not be in the index yet."""
        names: set[str] = set()
        try:
            journals = [e.path for e in os.scandir(self._journal_dir_s)]
        except FileNotFoundError:
            return names
        for path in journals:
            names.update(rec.name for _kind, rec in _read_journal(path))
        return names

    # --------------------------------------------------------------------------------- report
    def stats(self) -> CacheStats:
        self._ensure_open()
        self._publish()
        c: Counters = self._index.counters()
        reserved, writes = self._ledger.totals()
        p = self._pending
        return CacheStats(
            root=str(self.root),
            size_bytes=c.live_bytes + c.replaced_bytes,
            data_bytes=c.live_data_bytes,
            entries=c.entries,
            max_bytes=self.max_bytes,
            target_bytes=self.target_bytes,
            reserved_bytes=reserved,
            writers=writes,
            replaced_pinned_bytes=c.replaced_bytes,
            hits=c.hits + p.hits,
            misses=c.misses + p.misses,
            evicted_files=c.evicted_files,
            evicted_bytes=c.evicted_bytes,
            expired_files=c.expired_files,
            ttl_s=self.ttl_s,
            block_bytes=self.block_bytes,
        )

    def entries(self, order: str = "lru") -> list[EntryInfo]:
        """Every live entry, least recently used first (``order`` may also be key, size, created)."""
        self._ensure_open()
        self._publish()
        return [
            EntryInfo(r.key, self.root / r.name, r.size, r.checksum, r.created, r.accessed)
            for r in self._index.iter_live(order)
        ]

    def entry(self, key: str) -> EntryInfo | None:
        """Index facts about one entry (no hit/miss counted)."""
        self._ensure_open()
        self._publish()
        r = self._index.live_row(validate_key(key))
        return None if r is None else EntryInfo(r.key, self.root / r.name, r.size, r.checksum, r.created, r.accessed)

    def eviction_log(self, limit: int | None = None, *, newest_first: bool = True) -> list[EvictionReport]:
        """Past evictions from the events file, newest first."""
        events = self.events.read(kinds=("eviction",), limit=limit, newest_first=newest_first)
        return [EvictionReport.from_event(e) for e in events]

    # ------------------------------------------------------------------------ integrity API
    # For verify/repair tools (engine/jobs/verify.py): they scan, hash and report; what the
    # layout is, how the ledger and liveness are read and how rows may change lives here.
    @property
    def layout(self) -> CacheLayout:
        return CacheLayout.of(self.root)

    def snapshot(self) -> IndexSnapshot:
        """Every row (live, writing, replaced) and the counters, for a scan to start from."""
        self._ensure_open()
        self._publish()
        live = tuple(self._index.iter_live("key"))
        writing = tuple(self._index.rows_in_state(WRITING))
        replaced = tuple(self._index.rows_in_state(REPLACED))
        counters = self._index.counters()
        return IndexSnapshot(live, writing, replaced, counters, self.block_bytes, self.max_bytes or None)

    def writers(self) -> list[WriterSlot]:
        """Every used ledger slot, with whether its owner runs (a dead owner's token file is left alone)."""
        self._ensure_open()
        return [
            WriterSlot(s.index, s.token, s.reserved_bytes, s.writes, s.intent, owner_alive_readonly(self._owners, s.token))
            for s in self._ledger.used()
        ]

    def stale_files(self) -> list[str]:
        """``.part`` files (and, from older versions, trash files) whose writer is dead."""
        self._ensure_open()
        out: list[str] = []
        for d in (self._tmp, self._trash):
            try:
                entries = sorted(e.path for e in os.scandir(d) if e.is_file(follow_symlinks=False))
            except FileNotFoundError:
                continue
            out += [p for p in entries if not owner_alive_readonly(self._owners, os.path.basename(p).split(".", 1)[0])]
        return out

    def dead_writing_rows(self) -> list[Row]:
        """Reservations written as index rows by cachewatch versions before the ledger, whose owner is dead."""
        self._ensure_open()
        return [r for r in self._index.rows_in_state(WRITING) if not owner_alive_readonly(self._owners, r.owner)]

    @contextmanager
    def surgery(self) -> Iterator[IndexSurgery]:
        """``with cache.surgery() as s:`` one exclusive transaction for checking and fixing rows."""
        self._ensure_open()
        with self._index.transaction():
            yield IndexSurgery(self)

    @property
    def meta_dir(self) -> Path:
        return self._meta


# A forked child (a DataLoader worker) must see what its parent put: before a fork, every open
# cache of this process indexes its pending puts. (Registered after the index's own hook, so it
# runs before that one takes the index locks: at-fork "before" hooks run in reverse order.)
_OPEN_CACHES: "weakref.WeakSet[Cache]" = weakref.WeakSet()
_PEERS_OPEN = [0]  # len(_OPEN_CACHES) when last opened: the lookup asks peers only when there may be some


def _batch_timer(ref: "weakref.ref[Cache]", wake: threading.Event, interval_s: float, pid: int) -> None:
    """The batch timer of one open cache: commits a waiting batch ``interval_s`` after it was armed.

    Holds the cache only through a weak reference and looks every few idle seconds whether it
    is still there, so a cache dropped without ``close()`` is not kept alive by it.
    """
    while True:
        if not wake.wait(timeout=5.0):
            cache = ref()
            if cache is None or cache._closed or cache._pid != pid:
                return
            del cache
            continue
        # A batch armed before this clear is committed below; one armed after sets it again.
        wake.clear()
        time.sleep(interval_s)
        cache = ref()
        if cache is None or cache._closed or cache._pid != pid:
            return
        cache._commit_batch_quietly()
        del cache


def _publish_before_fork() -> None:
    for cache in list(_OPEN_CACHES):
        try:
            if not cache._closed and cache._pid == os.getpid() and cache._batch:
                cache._commit_batch()
        except Exception:  # pragma: no cover - a fork must not fail; the child may see a miss
            log.debug("indexing pending puts of %s before a fork failed", cache.root, exc_info=True)


os.register_at_fork(before=_publish_before_fork)


def _index_pending_at_exit(cache: Cache) -> None:
    """At interpreter exit, and at the end of a multiprocessing child (which skips atexit), index
    what this process put but did not close. Without it nothing is lost (the next opener replays
    the journal), but other processes would see the entries only after that."""
    ref = weakref.ref(cache)

    def run() -> None:
        c = ref()
        if c is not None and not c._closed and c._pid == os.getpid() and c._batch:
            try:
                c._commit_batch()
            except Exception:  # pragma: no cover - the journal keeps them for recovery
                pass

    atexit.register(run)
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.Finalize(None, run, exitpriority=10)


# ---------------------------------------------------------------------------------------- helpers
def check_limits(max_size: Any, target_size: Any, target_ratio: Any, ttl: Any) -> tuple[int | None, int | None, float | None]:
    """(max bytes, target bytes, ttl seconds) from what a caller gave, or one CacheError line naming the value."""
    try:
        ttl_s = None if ttl is None else parse_duration(ttl, what="ttl")
        max_bytes = None if max_size is None else parse_size(max_size, what="max_size")
        target = None if target_size is None else parse_size(target_size, what="target_size")
    except SizeError as exc:
        raise CacheError(str(exc)) from None
    if isinstance(target_ratio, bool) or not isinstance(target_ratio, (int, float)) or not 0 < target_ratio <= 1:
        raise CacheError(f"target_ratio = {target_ratio!r} is out of range; give a number in (0, 1], e.g. 0.9")
    if max_bytes is not None and max_bytes <= 0:
        raise CacheError(f"max_size = {max_size!r} leaves no room; give a positive size like '100GB'")
    if target is not None and max_bytes is not None and target > max_bytes:
        raise CacheError(f"target_size = {target_size!r} is above max_size = {max_size!r}; the target must be at most the max")
    return max_bytes, target, ttl_s


def index_kwargs(c: Any) -> dict[str, Any]:
    """The ``Cache(...)`` arguments that ``[cache] index``, ``node`` and ``lease`` give (none for SQLite)."""
    if c.index is None or c.index == "sqlite":
        return {}
    return {"index": c.index, "node": c.node, "lease_s": c.lease}


def _is_redis_url(index: object) -> bool:
    return isinstance(index, str) and index.startswith(("redis://", "rediss://", "unix://"))


def _has_redis_marker(root: object) -> bool:
    if not isinstance(root, (str, os.PathLike)):
        return False
    try:
        return CacheLayout.of(root).redis_marker.is_file()
    except (TypeError, ValueError):
        return False


def _index_file_state(db_path: Path) -> str:
    """``missing``, ``empty`` (0 bytes: SQLite would take it for a new database) or ``present``."""
    try:
        st = os.stat(db_path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "present"  # let SQLite say what is wrong with it
    return "empty" if st.st_size == 0 else "present"


# How long an opener without max_size waits for a process that is creating the cache to set its
# limits (at most its wait_timeout). Creating takes milliseconds; seconds under heavy load.
_CREATOR_WAIT_S = 10.0


def _stored_max(db_path: Path) -> int | None:
    """The max_size stored in the index at ``db_path``; None while it may still come (no file, no
    schema, no limits yet, the creator's transaction holds the file); -1 for a file that is not
    an index (left to the normal open to report). Never creates the file: an opener must not
    make an empty index that a creator would take for its own."""
    try:
        db = sqlite3.connect(f"file:{quote(os.fspath(db_path))}?mode=rw", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT value FROM meta WHERE name = 'max_bytes'").fetchone()
        return int(row[0]) if row and row[0] else None
    except sqlite3.OperationalError as exc:
        # (no such table: no schema yet; locked or busy: the creator is writing it)
        return None if "no such table" in str(exc) or "lock" in str(exc) or "busy" in str(exc) else -1
    except (sqlite3.Error, ValueError):
        return -1
    finally:
        db.close()


def _await_stored_max(db_path: Path, meta: Path, timeout_s: float) -> int | None:
    """Poll for a creator's limits while the metadata directory exists, up to ``timeout_s``;
    the stored max (-1: not an index), or None if none came."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while meta.is_dir():
        found = _stored_max(db_path)
        if found is not None or time.monotonic() >= deadline:
            return found
        if _has_redis_marker(meta.parent):
            raise CacheRootError(
                f"cache {meta.parent} is being created with a Redis index by another process; "
                f"open it again (Cache(root) then finds that index by itself)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return None


def _move_index_aside(db_path: Path) -> None:
    """Keep a lost or broken index (and its WAL, which must not be replayed into a new one) for inspection."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(db_path) + suffix)
        if os.path.lexists(src):
            try:
                os.rename(src, Path(f"{db_path}.lost-{stamp}-{os.getpid()}{suffix}"))
            except FileNotFoundError:
                pass


def _has_entry_files(root: Path) -> bool:
    try:
        shards = [e for e in os.scandir(root) if SHARD_RE.match(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return False
    for shard in shards:
        with os.scandir(shard.path) as it:
            if any(True for _ in it):
                return True
    return False


def _block_size(path: Path) -> int:
    try:
        frsize = os.statvfs(path).f_frsize
    except OSError:
        return 4096
    return frsize if 512 <= frsize <= 1 << 20 else 4096


# ``base / leaf`` for a leaf that is one plain component (no separator, never "." or ".."):
# pathlib's own join without re-parsing, where this Python's pathlib has it (3.11-3.13).
_child: "Callable[[Path, str], Path]" = getattr(Path, "_make_child_relpath", None) or Path.__truediv__


def _same_file(path: str | Path, st: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return now.st_ino == st.st_ino and now.st_dev == st.st_dev


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
try:
    _renameat2: Any = ctypes.CDLL(None, use_errno=True).renameat2
    _renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    _renameat2.restype = ctypes.c_int
except (AttributeError, OSError):  # pragma: no cover - libc without renameat2
    _renameat2 = None


def _rename_noreplace(source: bytes, final: bytes) -> None:
    """Rename ``source`` to ``final`` only if ``final`` does not exist (FileExistsError otherwise).

    Atomic create-if-absent, so that two processes putting one key never replace each other's
    file: renameat2(RENAME_NOREPLACE), or where the filesystem lacks it, link + unlink.
    """
    global _renameat2
    for _attempt in range(3):
        if _renameat2 is not None:
            if _renameat2(_AT_FDCWD, source, _AT_FDCWD, final, _RENAME_NOREPLACE) == 0:
                return
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                _renameat2 = None  # not on this filesystem: link + unlink from now on
                continue
            exc: OSError = OSError(err, os.strerror(err), os.fsdecode(final))
        else:
            try:
                os.link(source, final)
                os.unlink(source)
                return
            except OSError as e:
                exc = e
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(final))
        if exc.errno == errno.ENOENT and os.path.exists(source):
            os.makedirs(os.path.dirname(final), exist_ok=True)  # the shard directory is not there yet
            continue
        raise exc
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fsdecode(final))


def _unlink_quiet(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_unpinned(path: str, ino: int | None) -> None:
    """Unlink the file at ``path`` if it is inode ``ino`` and nobody holds a pin (shared flock) on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if try_exclusive(fd) and os.fstat(fd).st_ino == ino and _same_file(path, os.fstat(fd)):
            os.unlink(path)
    finally:
        os.close(fd)


def _unlink_unless_pinned(path: str, ino: int | None) -> bool:
    """Unlink the file at ``path`` if it is inode ``ino``; False only when a reader pins it (it stays)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return True  # (unreadable: not a file this cache made)
    try:
        st = os.fstat(fd)
        if st.st_ino != ino:
            return True  # not ours (any more)
        if not try_exclusive(fd):
            return False
        if _same_file(path, st):
            os.unlink(path)
        return True
    finally:
        os.close(fd)


# Victims' files an evictor holds open and exclusively locked between its pin test and the unlink.
# A forked child gets copies of them; it closes those at once (the locks belong to the parent's
# open files, which keep them until the parent closes its own descriptors).
_HELD_FDS: set[int] = set()


def _hold_fd(held: dict[int, int], row_id: int, fd: int) -> None:
    held[row_id] = fd
    _HELD_FDS.add(fd)


def _close_held(held: dict[int, int], row_id: int) -> None:
    fd = held.pop(row_id, -1)
    if fd >= 0:
        _HELD_FDS.discard(fd)
        os.close(fd)


def _unlink_held(held: dict[int, int], row: Row, path: str) -> None:
    """Unlink an evicted row's file through the descriptor locked since its pin test, if it is still
    that inode at ``path`` (no pin can have come since; nothing to do when it had no file then)."""
    fd = held.get(row.id, -1)
    if fd < 0:
        return
    try:
        st = os.fstat(fd)
        if st.st_ino == row.ino and _same_file(path, st):
            os.unlink(path)
    finally:
        _close_held(held, row.id)


def _close_held_in_child() -> None:
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _row_record(r: Row) -> "_Put":
    return _Put(r.key, r.name, r.size, r.charge, r.checksum or "", r.ino or 0, r.created)


def _hash_file(path: str | Path, size: int) -> tuple[str, int]:
    h = xxhash.xxh3_64()
    with open(path, "rb") as fh:
        ino = os.fstat(fh.fileno()).st_ino
        while chunk := fh.read(_COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest(), ino


def _copy_and_hash(src: Path, dst: str | Path, size: int) -> tuple[str, int]:
    h = xxhash.xxh3_64()
    total = 0
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            while chunk := fin.read(_COPY_CHUNK):
                total += len(chunk)
                if total > size:
                    raise CacheError(f"source file '{src}' grew while it was copied; write it completely first")
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            ino = os.fstat(fd).st_ino
        finally:
            os.close(fd)
    if total != size:
        raise CacheError(f"source file '{src}' shrank while it was copied; write it completely first")
    return h.hexdigest(), ino

