"""A cache on shared storage with its index in Redis: one bound for every process of every machine.

``Cache(root, max_size=..., index="redis://host:6379/0")`` (or ``[cache] index``) opens a
:class:`RedisCache`. The entry files live under ``root`` as in the SQLite cache (shared
storage: NFS, Lustre, a cloud volume); the reservations, the rows, the LRU order and the
counters live in Redis and change only through the Lua scripts of :mod:`.redis_scripts`, which
use the server's clock. Why not SQLite and ``flock`` on the shared directory: neither is safe
on NFS (python-diskcache#164, #345; huggingface/datasets#6744).

A put, in order (docs/cache.md, "One bound across machines"):

1. **Reserve**: a script checks ``live + reserved + quarantined + doomed`` against the target
   (then, after evicting, the max) and grants a **lease**: a fencing token (a counter), an
   expiry on the server's clock, the ``.part`` name and the entry's final name, both derived
   from the token. A thread renews the lease while the put runs.
2. **Write** ``.cachewatch/tmp/<node>.<token>.part``, then **link** it into place from its
   open descriptor (``/proc/self/fd``), which fails if the name exists and fails if the
   ``.part`` was unlinked meanwhile (a reconciler took the lease back), then unlink the
   ``.part``. The final name ``<name>%%v<token>`` is unique to the lease, so a reconciler
   knows every name a stalled writer could have created.
3. **Commit**: a script checks the lease is still valid *on the server's clock*, moves its
   bytes from ``reserved`` to the new row, and dooms the key's old version, all at once. An
   expired lease refuses the commit: the writer removes its file and the put fails.

A writer stalled past its lease (SIGSTOP, a frozen VM, a cut network) cannot break the bound:
its bytes move from ``reserved`` to ``quarantined`` (still counted) when the lease expires,
and return to the budget only after a reconciler has replaced its ``.part`` with a tombstone
(so that it can neither create nor link it any more) and removed the final name if it got
that far. Eviction: a script takes the LRU rows out of the index and counts them as doomed;
their files are unlinked; another script releases the bytes. A dead evictor's doomed files are
unlinked by the next reconciler. Pins are per-reader leases in Redis, skipped by eviction.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import socket
import stat as _stat
import threading
import time
import uuid as _uuid
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import xxhash

from ..errors import CacheBusy, CacheDiskFull, CacheError, CacheIndexUnavailable, CacheRootError
from ..events import EventLog
from ..redisutil import redacted, redis_client
from ..sizes import SizeError, format_size, parse_duration, parse_size
from .cache import _CREATOR_WAIT_S, META_DIR, Cache, CacheMiss, _block_size, _crash_point, _has_entry_files, _is_disk_full, check_limits
from .index import LIVE, REPLACED, Counters, Row
from .integrity import CacheLayout, IndexSnapshot, WriterSlot
from .keys import key_to_name, name_to_key, validate_key
from .redis_scripts import PRELUDE, SCRIPTS
from .types import CacheStats, EntryInfo, EvictionReport

__all__ = ["RedisCache", "node_id"]

log = logging.getLogger("cachewatch.cache")

_EVENTS_FILE = "events.jsonl"
_CHUNK = 1 << 20
_EVICT_MAX = 256  # victims per eviction script call (the script blocks Redis while it runs)
_TOMBSTONE_KEEP_S = 3600.0
_NODE_RE = re.compile(r"[^A-Za-z0-9_.-]")
_VERSION_RE = re.compile(r"%%v([0-9a-f]+)$")
_LOG_MAXLEN = 2000
_DOWN_RETRY_S = 5.0  # after Redis failed a read, reads use the files this long before asking it again


def node_id(node: str | None = None) -> str:
    """This writer's node id: the argument, else ``CACHEWATCH_CACHE_NODE``, else the host name."""
    raw = node or os.environ.get("CACHEWATCH_CACHE_NODE") or socket.gethostname() or "node"
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 128 or "\x00" in raw:
        raise CacheError(f"node id {raw!r} is not usable; give up to 128 characters, e.g. the host name")
    return raw.strip()


def _is_redis_down(exc: BaseException) -> bool:
    try:
        import redis.exceptions as rx
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, rx.AuthenticationError):  # (a ConnectionError in redis-py, but not an outage)
        return False
    return isinstance(exc, (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError)) or (
        isinstance(exc, rx.ResponseError) and str(exc).startswith(("LOADING", "MASTERDOWN", "READONLY"))
    )


def _is_lost(exc: BaseException) -> bool:
    return "CWLOST" in str(exc)


class _Renewer(threading.Thread):
    """Renews this process's leases (writes in flight) and pins while they are held.

    Holds the cache weakly; one per open cache per process (made again after a fork).
    """

    def __init__(self, cache: "RedisCache") -> None:
        super().__init__(name="cachewatch-lease", daemon=True)
        self._ref = weakref.ref(cache)
        self.wake = threading.Event()
        self.period_s = max(0.05, min(cache.lease_s, cache.pin_lease_s) / 3)
        self.pid = os.getpid()

    def run(self) -> None:
        while True:
            self.wake.wait(self.period_s)
            self.wake.clear()
            cache = self._ref()
            if cache is None or cache._closed or os.getpid() != self.pid:
                return
            try:
                cache._renew_once()
            except Exception:  # the next round tries again; a put checks its own deadline
                log.debug("lease renewal for %s failed", cache.root, exc_info=True)
            del cache


class RedisCache(Cache):
    """A :class:`Cache` whose ledger, rows, LRU order and counters live in Redis.

    Made by ``Cache(root, index="redis://...")``, or ``Cache(root)`` on a root whose
    ``.cachewatch/redis.json`` names its Redis. ``node`` (default ``CACHEWATCH_CACHE_NODE`` or
    the host name) says which machine writes; ``lease_s`` is how long a write's reservation
    lasts without renewal (a thread renews it every third of that while the put runs);
    ``pin_lease_s`` the same for a pin. ``timeout_s`` bounds every Redis call: a put on a node
    that cannot reach Redis fails within it.
    """

    def __init__(  # noqa: PLR0913 - mirrors Cache's signature
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
        node: str | None = None,
        lease_s: float | str = 10.0,
        pin_lease_s: float | str = 30.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._closed = True
        self._set_root(root)  # (the string paths Cache's get, read and pin join names to)
        self._meta = self.root / META_DIR
        self.readonly = bool(readonly)
        self.limits_note: str | None = None
        self.wait_timeout = float(wait_timeout)
        self.flush_interval = float(flush_interval)
        max_bytes, target, ttl_s = check_limits(max_size, target_size, target_ratio, ttl)
        try:
            self.lease_s = parse_duration(lease_s, what="lease_s")
            self.pin_lease_s = parse_duration(pin_lease_s, what="pin_lease_s")
        except SizeError as exc:
            raise CacheError(str(exc)) from None
        if not 0.05 <= self.lease_s <= 3600 or not 0.05 <= self.pin_lease_s <= 86400:
            raise CacheError(f"lease_s = {lease_s!r} / pin_lease_s = {pin_lease_s!r} out of range; give 0.05 s to 1 h (pins: 1 day)")
        self.node = node_id(node)
        # How long an evictor or a reconciler owns the files it is removing (and the evictor its
        # lock): a lease's length, so that one killed mid-way holds the others up no longer than
        # a killed writer's reservation does.
        self._claim_ms = max(50, int(self.lease_s * 1000))
        self._node_tag = _NODE_RE.sub("_", self.node)[:48]
        self._init_args: dict[str, Any] = dict(
            root=root, max_size=max_size, target_ratio=target_ratio, ttl=ttl, target_size=target_size,
            wait_timeout=wait_timeout, flush_interval=flush_interval, sweep=False, index=index, node=self.node,
            lease_s=self.lease_s, pin_lease_s=self.pin_lease_s, timeout_s=timeout_s,
        )

        # Which Redis, which prefix: the URL given, else the marker's; the uuid must agree.
        marker_path = CacheLayout.of(self.root).redis_marker  # the URL without password, the prefix, the uuid
        marker: dict[str, Any] | None = None
        if marker_path.is_file():
            marker = self._read_marker(marker_path)
        elif (self._meta / "index.sqlite").exists():
            raise CacheRootError(
                f"cache '{self.root}' has a SQLite index; a root has one index: use a new root for index = {redacted(index or '', mask='')!r}"
            )
        # The marker keeps no password: a process opening the root alone (a DataLoader worker) takes
        # the URL with credentials from CACHEWATCH_CACHE_INDEX when the launcher set it.
        url = index or os.environ.get("CACHEWATCH_CACHE_INDEX") or (marker or {}).get("url")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise CacheError(f"index = {url!r} is not a Redis URL; write e.g. 'redis://host:6379/0'")
        self.url = url
        self.url_shown = redacted(url, mask="")
        q = parse_qs(urlsplit(url).query)
        prefix_q = (q.get("prefix") or [None])[0]
        if marker is None and readonly:
            raise CacheRootError(f"'{self.root}' is not a cachewatch cache (no {META_DIR}/{marker_path.name}); check the path or [cache] root")
        if not readonly:
            self._prepare_root()
            (self._meta / "tmp").mkdir(exist_ok=True)
        created_marker = False
        if marker is None:
            # The marker first, created only if absent: of processes (nodes) creating one root at
            # once, one names the index and the others adopt it. (Written after the index, each
            # made its own and the last rename won: two bounds on one set of files.)
            if max_bytes is None and not resize:
                self._no_max_size()  # (not a cache yet: nothing to adopt, no limits to make one)
            new_uuid = _uuid.uuid4().hex
            self._uuid, self._prefix = new_uuid, prefix_q or f"cachewatch:cache:{{{new_uuid}}}"
            _crash_point("redis_open_before_marker")
            created_marker = self._create_marker(marker_path)
            if not created_marker:
                marker = self._read_marker(marker_path)
        if marker is not None:
            self._uuid = str(marker["uuid"])
            self._prefix = str(prefix_q or marker["prefix"])
        self._redis = self._client(url, timeout_s)
        self._scripts = {name: self._redis.register_script(PRELUDE + body) for name, body in SCRIPTS.items()}

        self._tmp_s = str(self._meta / "tmp")
        self.block_bytes = _block_size(self.root)
        mode = "open"
        if created_marker or new_index_over_files:
            mode = "create"
        if resize:
            mode = "resize"
            if max_bytes is None:
                raise CacheError("resize needs max_size; give the new max (e.g. '100GB')")
        if mode != "open" and max_bytes is None:
            self._no_max_size()
        tgt = target if target is not None else (int(max_bytes * target_ratio) if max_bytes is not None else 0)
        ttl_ms = -1 if ttl_s is None else int(ttl_s * 1000)
        if created_marker:
            _crash_point("redis_open_before_init")
        res = self._init_index(mode, max_bytes, tgt, ttl_ms)
        created, stored_max, stored_target, stored_ttl, stored_block, stored_uuid = (
            int(res[0]), int(res[1]), int(res[2]), int(res[3]), int(res[4]), _s(res[5])
        )
        if stored_uuid != self._uuid:
            raise CacheRootError(
                f"Redis {self.url_shown} (prefix {self._prefix}) indexes another cache (uuid {stored_uuid}, "
                f"this root has {self._uuid}); point index at the right server/prefix"
            )
        self.max_bytes = stored_max
        self.target_bytes = stored_target
        self.ttl_s = None if stored_ttl < 0 else stored_ttl / 1000
        self.block_bytes = stored_block  # one charge rule for every node
        if not created and mode == "open" and max_bytes is not None and (max_bytes, tgt) != (stored_max, stored_target):
            self.limits_note = (
                f"cache {self.root} keeps its stored limits (max {format_size(stored_max)}, target "
                f"{format_size(stored_target)}); `cachewatch cache resize` changes them"
            )
            log.warning("%s", self.limits_note)

        self.events = EventLog(self._meta / _EVENTS_FILE, source=f"cache:{self.root}")
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._leases: dict[int, float] = {}  # fence -> local monotonic deadline (conservative)
        self._lost: set[int] = set()
        self._pins: dict[tuple[str, str], int] = {}  # (name, reader) -> holders in this process
        self._reader_seq = 0
        self._touches: dict[str, float] = {}
        self._hits = self._misses = 0
        self._last_flush = time.monotonic()
        self._renewer: _Renewer | None = None
        self._evict_token: str | None = None
        self._tombstones_checked = 0.0
        self._reads_from_disk_until = 0.0
        self._down_warned = False
        self._closed = False
        if not readonly and mode == "resize":
            used = self._used()
            if used > self.max_bytes:
                self._evict_to(self.target_bytes, "resize")

    # ------------------------------------------------------------------------------ plumbing
    @staticmethod
    def _client(url: str, timeout_s: float) -> Any:
        try:
            # ``prefix`` is ours; redis-py's own URL options (ssl_ca_certs=..., ...) pass through.
            parts = urlsplit(url)
            query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "prefix"])
            return redis_client(urlunsplit(parts._replace(query=query)), timeout_s=timeout_s)
        except ImportError:
            raise CacheError("a Redis-indexed cache needs redis-py; install it with `pip install 'cachewatch[redis]'`") from None

    def _unavailable(self, exc: BaseException, what: str) -> CacheIndexUnavailable:
        return CacheIndexUnavailable(
            f"cache index {self.url_shown} is unreachable ({type(exc).__name__}: {str(exc)[:120]}); "
            f"{what}. Entries already on disk stay readable; check that Redis server and this node's network"
        )

    def _lost_error(self) -> CacheRootError:
        return CacheRootError(
            f"the index of cache {self.root} in {self.url_shown} (prefix {self._prefix}) is empty: Redis lost its data "
            f"or this is another server; rebuild it from the files with `cachewatch verify {self.root} --repair --max-size SIZE`"
        )

    def _script(self, name: str, *args: Any, what: str = "nothing was changed") -> Any:
        try:
            return self._scripts[name](keys=[self._prefix + ":meta"], args=[self._prefix, *args])
        except Exception as exc:
            if _is_redis_down(exc):
                raise self._unavailable(exc, what) from None
            if _is_lost(exc):
                raise self._lost_error() from None
            if type(exc).__name__ == "AuthenticationError" or any(w in str(exc) for w in ("NOAUTH", "WRONGPASS", "authenticated")):
                raise CacheError(
                    f"cache index {self.url_shown} refused the credentials ({exc}); give the URL with user and "
                    f"password in [cache] index or CACHEWATCH_CACHE_INDEX (the root's marker keeps no password)"
                ) from None
            raise CacheError(f"cache index {self.url_shown} refused {name} ({exc})") from None

    def _create_marker(self, path: Path) -> bool:
        """Write the marker whole under its name only if no other process has (link, not rename,
        refuses an existing name); False when another one is there."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{self._uuid[:8]}.tmp")
        tmp.write_text(json.dumps({"url": self.url_shown, "prefix": self._prefix, "uuid": self._uuid}, indent=1) + "\n")
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _read_marker(path: Path) -> dict[str, Any]:
        try:
            marker = json.loads(path.read_text())
            if not isinstance(marker, dict) or "uuid" not in marker or "prefix" not in marker:
                raise ValueError("fields missing")
        except (OSError, ValueError) as exc:
            raise CacheRootError(f"{path} cannot be read ({exc}); restore it or move the root aside") from None
        return marker

    def _init_index(self, mode: str, max_bytes: int | None, target: int, ttl_ms: int) -> Any:
        """The index's limits: made (``create``), changed (``resize``) or read (``open``).

        An index that is empty while the root holds no entry file is a creation under way (or
        one whose creator died after writing the marker): an opener with a ``max_size`` makes
        it (the same uuid and prefix: making it twice is harmless), one without waits for the
        creator, up to 10 s or its ``wait_timeout``. Over entry files it is a lost index.
        """
        deadline = time.monotonic() + min(self.wait_timeout, _CREATOR_WAIT_S)
        delay = 0.01
        while True:
            try:
                return self._script("init", max_bytes or 0, target, ttl_ms, self.block_bytes, self._uuid, mode)
            except CacheIndexUnavailable:
                raise
            except CacheError as exc:
                if "CWLOST" not in str(exc) and "empty" not in str(exc):
                    raise
            if _has_entry_files(self.root):
                raise self._lost_error()
            if max_bytes is not None:
                mode = "create"
                continue
            if time.monotonic() >= deadline:
                self._no_max_size(
                    f" (its {META_DIR}/{CacheLayout.of(self.root).redis_marker.name} exists but no process "
                    f"made its index within {min(self.wait_timeout, _CREATOR_WAIT_S):g}s)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    @classmethod
    def index_missing(cls, root: str | os.PathLike) -> bool:
        """True when the root names a Redis index that holds nothing (lost, flushed, another server)."""
        try:
            c = cls(root, readonly=True)
        except CacheRootError as exc:
            return "is empty" in str(exc)
        c.close()
        return False

    def _ensure_open(self) -> None:
        if self._closed:
            raise CacheError(f"cache {self.root} is closed; open it again with Cache(...)")
        if self._pid != os.getpid():
            # A forked child: the parent's leases, pins and renewal thread stay the parent's.
            # (redis-py's pool makes new connections in a new process.)
            self._pid = os.getpid()
            self._lock = threading.RLock()
            self._leases, self._lost, self._pins = {}, set(), {}
            self._touches, self._hits, self._misses = {}, 0, 0
            self._renewer = None

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = _Renewer(self)
            self._renewer.start()

    def _renew_once(self) -> None:
        with self._lock:
            fences = list(self._leases)
            pins = list(self._pins)
        if not fences and not pins:
            return
        flat: list[Any] = []
        for name, reader in pins:
            flat += [name, reader]
        t0 = time.monotonic()
        lost = self._script("renew", int(self.lease_s * 1000), int(self.pin_lease_s * 1000), len(fences), *fences, *flat)
        lost_s = {_s(x) for x in lost}
        with self._lock:
            for f in fences:
                if str(f) in lost_s:
                    self._lost.add(f)
                elif f in self._leases:
                    self._leases[f] = t0 + self.lease_s * 0.8
        if any(x.startswith("pin:") for x in lost_s):
            log.warning("a pin on cache %s expired while held (the process was stalled longer than pin_lease_s)", self.root)

    def _lease_alive(self, fence: int) -> bool:
        """False when the lease may have expired: the server counted it out (or is about to)."""
        with self._lock:
            return fence not in self._lost and time.monotonic() < self._leases.get(fence, 0.0)

    # ----------------------------------------------------------------------------- accounting
    def _counters(self) -> dict[str, int]:
        try:
            raw = self._redis.hgetall(self._prefix + ":cnt")
        except Exception as exc:
            if _is_redis_down(exc):
                raise self._unavailable(exc, "no statistics") from None
            raise
        return {_s(k): int(v) for k, v in raw.items()}

    def _used(self) -> int:
        c = self._counters()
        return c.get("live", 0) + c.get("reserved", 0) + c.get("quarantined", 0) + c.get("doomed", 0)

    # ---------------------------------------------------------------------------------- puts
    def put(self, key: str, data: bytes | bytearray | memoryview) -> Path:
        """Store ``data`` under ``key``; visible to every node once this returns."""
        self._ensure_open()
        key = validate_key(key)
        if isinstance(data, str) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise CacheError(f"value for key {key!r} is a {type(data).__name__}; put() takes bytes (use put_file for paths)")
        self._ensure_writable()
        view = memoryview(data).cast("B")
        return self._put(key, view.nbytes, lambda fd, fence: self._write_view(fd, view, fence))

    def put_file(self, key: str, src_path: str | os.PathLike, move: bool = False) -> Path:
        """Store the file at ``src_path`` (copied; with ``move=True`` the source is removed after)."""
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
        path = self._put(key, st.st_size, lambda fd, fence: self._copy_into(fd, src, st.st_size, fence))
        if move:
            try:
                os.unlink(src)
            except FileNotFoundError:
                pass
        return path

    def _write_view(self, fd: int, view: memoryview, fence: int) -> str:
        written = 0
        size = view.nbytes
        while written < size:
            if not self._lease_alive(fence):
                raise _LeaseLost()
            written += os.write(fd, view[written : written + _CHUNK])
        return xxhash.xxh3_64_hexdigest(view)

    def _copy_into(self, fd: int, src: Path, size: int, fence: int) -> str:
        h = xxhash.xxh3_64()
        total = 0
        with open(src, "rb") as fin:
            while chunk := fin.read(_CHUNK):
                if not self._lease_alive(fence):
                    raise _LeaseLost()
                total += len(chunk)
                if total > size:
                    raise CacheError(f"source file '{src}' grew while it was copied; write it completely first")
                h.update(chunk)
                v = memoryview(chunk)
                while v:
                    v = v[os.write(fd, v):]
        if total != size:
            raise CacheError(f"source file '{src}' shrank while it was copied; write it completely first")
        return h.hexdigest()

    def _put(self, key: str, size: int, fill: Any) -> Path:
        charge = self._charge(size)
        self._check_fits(key, charge)
        base = key_to_name(key)
        fence, name, part = self._reserve(key, charge, base)
        part_path = os.path.join(self._tmp_s, part)
        final = os.path.join(str(self.root), name)
        fd = -1
        linked = committing = False
        try:
            if not self._lease_alive(fence):
                raise _LeaseLost()
            try:
                fd = os.open(part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                raise _LeaseLost() from None  # a reconciler's tombstone: the lease was taken back
            checksum = fill(fd, fence)
            ino = os.fstat(fd).st_ino
            if not self._lease_alive(fence):
                raise _LeaseLost()
            _link_fd(fd, final)
            linked = True
            _unlink_quiet(part_path)
            row = json.dumps({"n": name, "s": size, "c": charge, "h": checksum, "i": str(ino), "o": self.node, "f": fence})
            committing = True
            res = self._script(
                "commit", fence, key, row, size, charge, name, self._claim_ms,
                what="the put may not have been stored (if the commit did not reach Redis, its lease expires and a "
                     "reconciler removes the file)",
            )
            if int(res[0]) != 1:
                raise _LeaseLost()
            oldname = _s(res[1])
        except _LeaseLost:
            self._undo(fence, fd, part_path, final if linked else None)
            fd = -1
            raise CacheError(
                f"put of key {key!r} to cache {self.root} lost its lease ({self.lease_s:g} s): this process was stalled "
                f"or cut off from {self.url_shown} for longer than that; nothing was stored, retry the put"
            ) from None
        except CacheIndexUnavailable:
            if committing:
                # The commit may have run with its reply lost: the file stays. If it did not run,
                # the lease expires, is quarantined, and the reconciler removes the file then.
                _unlink_quiet(part_path)
            else:
                self._undo(fence, fd, part_path, final if linked else None)
                fd = -1
            raise
        except BaseException as exc:
            self._undo(fence, fd, part_path, final if linked else None)
            fd = -1
            if _is_disk_full(exc):
                raise CacheDiskFull(
                    f"disk full while writing key {key!r} ({format_size(size)}) under {self.root}: free space on that "
                    f"filesystem or lower max_size ({format_size(self.max_bytes)}); nothing was stored"
                ) from None
            if isinstance(exc, OSError):
                raise CacheError(f"cannot write key {key!r} under {self.root}: {exc.strerror or exc}; nothing was stored") from None
            raise
        finally:
            if fd >= 0:
                os.close(fd)
            with self._lock:
                self._leases.pop(fence, None)
                self._lost.discard(fence)
        if oldname:
            self._unlink_doomed([oldname])
        return Path(final)

    def _undo(self, fence: int, fd: int, part_path: str, final: str | None) -> None:
        """Remove what this put made; release its lease only where the server can be told.

        Files first, then the bytes: if Redis cannot be reached, the lease expires, turns into a
        quarantine, and the next reconciler finds the files already gone.
        """
        ino = None
        if fd >= 0:
            try:
                ino = os.fstat(fd).st_ino
            except OSError:
                pass
        if final is not None:
            _unlink_if(final, ino)
        _unlink_if(part_path, ino)
        if fd >= 0:
            os.close(fd)
        try:
            self._script("abort", fence)
        except CacheError:
            pass  # its lease expires, and a reconciler releases it

    def _reserve(self, key: str, charge: int, base: str) -> tuple[int, str, str]:
        """A lease on ``charge`` bytes: (fence, final name, .part name). Evicts when the target is reached."""
        deadline = time.monotonic() + self.wait_timeout
        part_prefix = f"{self._node_tag}.{os.getpid()}."
        self._start_renewer()
        limit = "t"
        delay = 0.002
        while True:
            t0 = time.monotonic()
            res = self._script("reserve", self.node, charge, key, base, part_prefix, int(self.lease_s * 1000), limit,
                               what="the put was not stored")
            if int(res[0]) == 1:
                fence = int(res[1])
                with self._lock:
                    self._leases[fence] = t0 + self.lease_s * 0.8
                return fence, _s(res[2]), _s(res[3])
            # No room under the target: evict if no other process is evicting (never wait for its
            # lock: 24 writers polling it cost more CPU than the puts), then ask against the max.
            if limit == "t":
                self._evict_to(self.target_bytes - charge, "size", wait_s=0.0)
                limit = "m"
                continue
            if self._evict_to(self.target_bytes - charge, "size", wait_s=0.0).files or self.reconcile():
                continue
            if time.monotonic() >= deadline:
                u = self._counters()
                raise CacheBusy(
                    f"no room for key {key!r} ({format_size(charge)}) in cache {self.root} within {self.wait_timeout:g}s: "
                    f"{format_size(u.get('live', 0))} in entries, {format_size(u.get('reserved', 0))} being written, "
                    f"{format_size(u.get('quarantined', 0))} quarantined, of {format_size(self.max_bytes)}; "
                    f"release pins or raise max_size"
                )
            time.sleep(delay)  # another process is evicting, or pins and leases hold the room
            delay = min(delay * 1.5, 0.05)

    # ------------------------------------------------------------------------------ eviction
    @contextmanager
    def _evictor(self, wait_s: float) -> Iterator[bool]:
        """The one-evictor-at-a-time lock (a Redis key with an expiry: a dead evictor's lapses)."""
        token = f"{self.node}:{os.getpid()}:{_uuid.uuid4().hex[:8]}"
        key = self._prefix + ":evlock"
        end = time.monotonic() + wait_s
        got = False
        try:
            while True:
                try:
                    got = bool(self._redis.set(key, token, nx=True, px=self._claim_ms))
                except Exception as exc:
                    if _is_redis_down(exc):
                        raise self._unavailable(exc, "no eviction") from None
                    raise
                if got or time.monotonic() >= end:
                    break
                time.sleep(0.01)
            self._evict_token = token if got else None
            yield got
        finally:
            self._evict_token = None
            if got:
                try:
                    self._script("unlock", token)
                except CacheError:
                    pass  # it expires

    def _evict_to(self, goal: int, reason: str, *, wait_s: float = 1.0) -> EvictionReport:
        """Evict LRU unpinned entries until used is a little below ``goal`` (the script's "batch");
        nothing when another process holds the evictor lock for ``wait_s``."""
        report = self._evict_rounds(goal, reason, "lru", "batch", wait_s)
        return report or EvictionReport(reason=reason, files=0, bytes=0, size_before=0, size_after=0, time=time.time())

    def _evict_rounds(self, goal: int, reason: str, order: str, mode: str, wait_s: float, cutoff_ms: int = 0) -> EvictionReport | None:
        """One evictor at a time, in rounds of at most ``_EVICT_MAX`` victims (a script blocks Redis
        while it runs); each round's files are unlinked before the next. None: the lock was busy."""
        t0 = time.time()
        files = nbytes = skipped = 0
        keys: list[str] = []
        before = -1
        with self._evictor(wait_s) as got:
            if not got:
                return None
            while True:
                res = self._script("evict", max(0, goal), _EVICT_MAX, self._claim_ms, order, cutoff_ms, mode)
                before = int(res[0]) if before < 0 else before
                skipped = max(skipped, int(res[2]))
                names = [_s(res[i]) for i in range(3, len(res), 3)]
                keys += [_s(res[i]) for i in range(4, len(res), 3)]
                files += len(names)
                nbytes += int(res[1])
                if names:
                    self._unlink_doomed(names)
                if len(names) < _EVICT_MAX:
                    break
                self._keep_evicting()
        report = EvictionReport(reason=reason, files=files, bytes=nbytes, size_before=max(before, 0),
                                size_after=max(before, 0) - nbytes, keys=tuple(keys[:50]), pinned_skipped=skipped,
                                time=t0, duration_s=time.time() - t0)
        if files:
            self._log_eviction(report)
        return report

    def _keep_evicting(self) -> None:
        """Extend the evictor lock between rounds (it expires after a lease's length)."""
        if self._evict_token is not None:
            self._script("extend", self._evict_token, self._claim_ms)

    def _unlink_doomed(self, names: list[str]) -> None:
        for n in names:
            _unlink_quiet(os.path.join(str(self.root), n))
        try:
            self._script("done", *names)
        except CacheError:
            pass  # still doomed and counted: a reconciler unlinks (again) and releases

    def _log_eviction(self, report: EvictionReport) -> None:
        fields = report.to_json()
        fields.pop("time", None)
        fields["node"] = self.node
        try:
            self._redis.xadd(self._prefix + ":log", {"e": json.dumps(fields)}, maxlen=_LOG_MAXLEN, approximate=True)
        except Exception:
            log.debug("eviction log to Redis failed", exc_info=True)
        try:
            self.events.append("eviction", **fields)
        except OSError as exc:
            log.warning("could not append an eviction event to %s (%s)", self.events.path, exc.strerror)

    def evict(self, to: int | str | None = None, *, dry_run: bool = False) -> EvictionReport:
        """Evict LRU entries until the cache holds at most ``to`` (default: the target)."""
        self._ensure_open()
        try:
            goal = self.target_bytes if to is None else parse_size(to, what="to")
        except SizeError as exc:
            raise CacheError(str(exc)) from None
        if dry_run:
            c = self._counters()
            size = c.get("live", 0)
            would: list[str] = []
            total = 0
            for r in self._rows_lru():
                if size - total <= goal:
                    break
                would.append(r.key)
                total += r.charge
            return EvictionReport(reason="manual", files=len(would), bytes=total, size_before=size,
                                  size_after=size - total, keys=tuple(would[:50]), dry_run=True, time=time.time())
        self._ensure_writable()
        self.reconcile()
        c = self._counters()
        # `to` is about entries on disk; writes in flight are not the caller's to evict.
        extra = c.get("reserved", 0) + c.get("quarantined", 0) + c.get("doomed", 0)
        report = self._evict_rounds(goal + extra, "manual", "lru", "exact", self.wait_timeout)
        if report is None:
            raise self._busy()
        return report

    def _busy(self) -> CacheBusy:
        return CacheBusy(f"another process has been evicting from cache {self.root} for {self.wait_timeout:g}s; try again")

    def expire(self) -> EvictionReport:
        """Remove entries older than ``ttl`` now (by the server's clock)."""
        self._ensure_open()
        if self.ttl_s is None:
            return EvictionReport(reason="ttl", files=0, bytes=0, size_before=0, size_after=0, time=time.time())
        self._ensure_writable()
        sec, usec = self._redis.time()
        cutoff = int(sec) * 1000 + int(usec) // 1000 - int(self.ttl_s * 1000)
        report = self._evict_rounds(0, "ttl", "ttl", "exact", self.wait_timeout, cutoff)
        if report is None:
            raise self._busy()
        return report

    # ---------------------------------------------------------------------------- reconciler
    def reconcile(self) -> int:
        """Settle what stalled or dead writers and evictors left: returns how many records were settled.

        For each expired lease (quarantined): its ``.part`` is replaced by a tombstone directory
        (the writer can no longer create or link it), the final name it could have taken is
        removed, and only then do its bytes return to the budget. For each doomed file whose
        evictor died: the file is unlinked, then its bytes released.
        """
        self._ensure_open()
        if self.readonly:
            return 0
        res = self._script("claim", self._claim_ms, 256)
        fences: list[str] = []
        names: list[str] = []
        i = 0
        while i < len(res):
            kind = _s(res[i])
            if kind == "q":
                fence, rec = _s(res[i + 1]), json.loads(_s(res[i + 2]))
                _tombstone(os.path.join(self._tmp_s, str(rec["p"])))
                final = os.path.join(str(self.root), str(rec["n"]))
                _remove_any(final)
                fences.append(fence)
                i += 3
            else:
                names.append(_s(res[i + 1]))
                i += 2
        if names:
            self._unlink_doomed(names)
        if fences:
            self._script("quar_done", *fences)
            log.info("cache %s: reconciled %d expired write lease(s)", self.root, len(fences))
        self._clean_tombstones()
        return len(fences) + len(names)

    def _clean_tombstones(self) -> None:
        now = time.time()
        if now - self._tombstones_checked < 60:
            return  # (a directory scan; reconcile runs on every retry of a put that finds no room)
        self._tombstones_checked = now
        try:
            with os.scandir(self._tmp_s) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        try:
                            if now - e.stat(follow_symlinks=False).st_mtime > _TOMBSTONE_KEEP_S:
                                os.rmdir(e.path)
                        except OSError:
                            pass
        except FileNotFoundError:
            pass

    def recover(self) -> int:
        self._ensure_open()
        self._ensure_writable()
        return self.reconcile()

    def sweep_orphans(self) -> tuple[int, int]:
        """Not automatic on shared storage: a file may be another node's put in flight. Use verify --repair."""
        return (0, 0)

    # ---------------------------------------------------------------------------------- reads
    def _row(self, key: str) -> Row | None:
        raw = self._redis.hget(self._prefix + ":rows", key)
        if raw is None:
            return None
        return _to_row(key, raw)

    def _lookup(self, key: str) -> Row | None:  # type: ignore[override]
        if time.monotonic() < self._reads_from_disk_until:
            return self._row_from_disk(key)  # Redis failed a moment ago: no timeout per read
        try:
            row = self._row(key)
        except Exception as exc:
            if not _is_redis_down(exc):
                raise
            self._warn_down(exc)
            # A DataLoader reading through a partition would wait timeout_s on every item: reads
            # go straight to the files for a few seconds, then ask Redis again.
            self._reads_from_disk_until = time.monotonic() + _DOWN_RETRY_S
            return self._row_from_disk(key)
        if self._down_warned:
            self._down_warned = False
            log.warning("cache index %s is reachable again", self.url_shown)
        if row is not None and self.ttl_s is not None and row.created + self.ttl_s < time.time():
            return None
        return row

    def _warn_down(self, exc: BaseException) -> None:
        if not self._down_warned:
            self._down_warned = True
            log.warning("cache index %s is unreachable (%s); reads fall back to the files on disk", self.url_shown, exc)

    def _row_from_disk(self, key: str) -> Row | None:
        """Without Redis: the key's newest complete file (the highest fence), if any."""
        name = key_to_name(key)
        shard, base = name.split("/", 1)
        best: tuple[int, str] | None = None
        try:
            with os.scandir(os.path.join(str(self.root), shard)) as it:
                for e in it:
                    if e.name.startswith(base + "%%v"):
                        m = _VERSION_RE.search(e.name)
                        if m and e.name[: m.start()] == base:
                            v = int(m.group(1), 16)
                            if best is None or v > best[0]:
                                best = (v, e.name)
        except FileNotFoundError:
            return None
        if best is None:
            return None
        n = f"{shard}/{best[1]}"
        try:
            st = os.stat(os.path.join(str(self.root), n))
        except FileNotFoundError:
            return None
        return Row(best[0], key, n, st.st_size, self._charge(st.st_size), LIVE, None, None, None, st.st_ino, st.st_mtime, st.st_mtime)

    def _record(self, row: Row | None, key: str, *, missing_file: bool = False) -> None:  # type: ignore[override]
        if self.readonly:
            return
        with self._lock:
            if row is None or missing_file:
                self._misses += 1
            else:
                self._hits += 1
                self._touches[key] = time.time()
            due = len(self._touches) >= 256 or time.monotonic() - self._last_flush >= self.flush_interval
        if due:
            try:
                self._flush_touches()
            except CacheError:
                pass  # advisory; the next flush tries again

    def _flush_touches(self) -> None:
        with self._lock:
            keys = list(self._touches)
            hits, misses = self._hits, self._misses
            self._touches, self._hits, self._misses = {}, 0, 0
            self._last_flush = time.monotonic()
        if not keys and not hits and not misses:
            return
        try:
            self._script("touch", hits, misses, *keys)
        except CacheError:
            with self._lock:
                self._hits += hits
                self._misses += misses
            raise

    def read(self, key: str) -> bytes | None:
        """The entry's bytes, or None. An open file stays readable even if another node evicts it meanwhile."""
        self._ensure_open()
        key = validate_key(key)
        for _attempt in range(4):
            row = self._lookup(key)
            if row is None:
                self._record(None, key)
                return None
            try:
                with open(self.root / row.name, "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                continue  # evicted or replaced between the lookup and the open: look again
            self._record(row, key)
            return data
        self._record(None, key)
        return None

    @contextmanager
    def pin(self, key: str) -> Iterator[Path]:
        """``with cache.pin(key) as path:`` no node evicts the entry until the block ends.

        The pin is a lease of this reader in Redis, renewed while held; a reader that dies
        stops renewing and its pin lapses after ``pin_lease_s``.
        """
        self._ensure_open()
        key = validate_key(key)
        with self._lock:
            self._reader_seq += 1
            reader = f"{self.node}:{os.getpid()}:{self._reader_seq}"
        if not self.readonly:
            self._start_renewer()
        raw = self._script("pin", key, reader, int(self.pin_lease_s * 1000), what="the entry was not pinned")
        if not raw:
            self._record(None, key)
            raise CacheMiss(f"key {key!r} is not in cache {self.root}")
        row = _to_row(key, raw)
        ident = (row.name, reader)
        with self._lock:
            self._pins[ident] = self._pins.get(ident, 0) + 1
        try:
            path = self.root / row.name
            if not path.exists():
                self._record(row, key, missing_file=True)
                raise CacheMiss(f"key {key!r} is not in cache {self.root} (its file is gone; `cachewatch verify --repair` fixes the index)")
            self._record(row, key)
            yield path
        finally:
            with self._lock:
                self._pins.pop(ident, None)
            try:
                self._script("unpin", row.name, reader)
            except CacheError:
                pass  # it lapses after pin_lease_s

    def __len__(self) -> int:
        self._ensure_open()
        return self._counters().get("entries", 0)

    def delete(self, key: str) -> bool:
        self._ensure_open()
        self._ensure_writable()
        key = validate_key(key)
        res = self._script("delete", key, self._claim_ms)
        if _s(res[1]):
            self._unlink_doomed([_s(res[1])])
        return int(res[0]) == 1

    def flush(self) -> None:
        self._ensure_open()
        if not self.readonly:
            self._flush_touches()

    def _publish(self) -> None:
        pass  # every put is committed before it returns

    # ------------------------------------------------------------------------------- reports
    def stats(self) -> CacheStats:
        self._ensure_open()
        flat, expired, writers, recent = self._script("stats", what="no statistics")
        c = {_s(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        # Leases past their expiry that no script has settled yet: quarantined already, in truth.
        c["reserved"] = c.get("reserved", 0) - int(expired)
        c["quarantined"] = c.get("quarantined", 0) + int(expired)
        writers = int(writers)
        with self._lock:
            hits, misses = self._hits, self._misses
        return CacheStats(
            root=str(self.root),
            size_bytes=c.get("live", 0) + c.get("doomed", 0),
            data_bytes=c.get("data", 0),
            entries=c.get("entries", 0),
            max_bytes=self.max_bytes,
            target_bytes=self.target_bytes,
            reserved_bytes=c.get("reserved", 0),
            writers=writers,
            replaced_pinned_bytes=c.get("doomed", 0),
            hits=c.get("hits", 0) + hits,
            misses=c.get("misses", 0) + misses,
            evicted_files=c.get("evicted_files", 0),
            evicted_bytes=c.get("evicted_bytes", 0),
            expired_files=c.get("expired_files", 0),
            ttl_s=self.ttl_s,
            block_bytes=self.block_bytes,
            quarantined_bytes=c.get("quarantined", 0),
            index=self.url_shown,
            index_id=self._uuid,
            nodes=tuple(sorted(_s(n) for n in recent)),
        )

    def _rows(self) -> Iterator[Row]:
        for k, v in self._redis.hscan_iter(self._prefix + ":rows", count=1000):
            yield _to_row(_s(k), v)

    def _rows_lru(self) -> list[Row]:
        order = self._redis.zrange(self._prefix + ":lru", 0, -1, withscores=True)
        rows = {r.key: r for r in self._rows()}
        out = []
        for k, score in order:
            r = rows.get(_s(k))
            if r is not None:
                out.append(r._replace(accessed=float(score) / 1000))
        return out

    def entries(self, order: str = "lru") -> list[EntryInfo]:
        self._ensure_open()
        if order not in ("lru", "key", "size", "created"):
            raise CacheError(f"order {order!r} is not one of lru, key, size, created")
        rows = self._rows_lru()
        if order == "key":
            rows.sort(key=lambda r: r.key)
        elif order == "size":
            rows.sort(key=lambda r: (-r.size, r.key))
        elif order == "created":
            rows.sort(key=lambda r: r.created)
        return [EntryInfo(r.key, self.root / r.name, r.size, r.checksum, r.created, r.accessed) for r in rows]

    def entry(self, key: str) -> EntryInfo | None:
        self._ensure_open()
        r = self._row(validate_key(key))
        return None if r is None else EntryInfo(r.key, self.root / r.name, r.size, r.checksum, r.created, r.accessed)

    def eviction_log(self, limit: int | None = None, *, newest_first: bool = True) -> list[EvictionReport]:
        """Past evictions of every node (Redis keeps the last 2,000), newest first."""
        try:
            raw = self._redis.xrevrange(self._prefix + ":log", count=limit) if newest_first else self._redis.xrange(self._prefix + ":log", count=limit)
        except Exception as exc:
            if not _is_redis_down(exc):
                raise
            return super().eviction_log(limit, newest_first=newest_first)  # this root's events file
        out = []
        for sid, fields in raw:
            d = json.loads(_s(fields.get(b"e") or fields.get("e") or "{}"))
            out.append(EvictionReport(
                reason=str(d.get("reason", "")), files=int(d.get("files", 0)), bytes=int(d.get("bytes", 0)),
                size_before=int(d.get("size_before", 0)), size_after=int(d.get("size_after", 0)),
                keys=tuple(d.get("keys", ())), pinned_skipped=int(d.get("pinned_skipped", 0)),
                time=int(_s(sid).split("-")[0]) / 1000, duration_s=float(d.get("duration_s", 0.0)),
            ))
        return out

    # ---------------------------------------------------------------------------- integrity
    def snapshot(self) -> IndexSnapshot:
        self._ensure_open()
        live = tuple(sorted(self._rows(), key=lambda r: r.key))
        doomed = []
        for n, v in self._redis.hgetall(self._prefix + ":doomed").items():
            d = json.loads(_s(v))
            doomed.append(Row(0, str(d.get("k", "")), _s(n), 0, int(d["c"]), REPLACED, None, None, None, None, 0.0, 0.0))
        return IndexSnapshot(live, (), tuple(doomed), self._index_counters(), self.block_bytes, self.max_bytes)

    def _index_counters(self) -> Counters:
        """The counters in the SQLite index's shape: doomed entries are its REPLACED rows, and write
        leases are not rows here (verify reads them through :meth:`writers`)."""
        c = self._counters()
        return Counters(c.get("live", 0), c.get("data", 0), c.get("entries", 0), 0, 0, c.get("doomed", 0),
                        c.get("hits", 0), c.get("misses", 0), c.get("evicted_files", 0), c.get("evicted_bytes", 0),
                        c.get("expired_files", 0))

    def writers(self) -> list[WriterSlot]:
        """Every write lease (live or expired, not reconciled yet)."""
        self._ensure_open()
        out: list[WriterSlot] = []
        live = {_s(f): float(s) for f, s in self._redis.zrange(self._prefix + ":leases", 0, -1, withscores=True)}
        for f, v in self._redis.hgetall(self._prefix + ":lease").items():
            d = json.loads(_s(v))
            out.append(WriterSlot(int(_s(f)), str(d.get("o", "")), int(d["c"]), 1, str(d.get("n", "")), _s(f) in live))
        for f, v in self._redis.hgetall(self._prefix + ":quar").items():
            d = json.loads(_s(v))
            out.append(WriterSlot(int(_s(f)), str(d.get("o", "")), int(d["c"]), 1, str(d.get("n", "")), False))
        return out

    def stale_files(self) -> list[str]:
        """``.part`` files of leases that no longer exist (their writer is gone and was reconciled)."""
        self._ensure_open()
        fences = {_s(f) for f in self._redis.hkeys(self._prefix + ":lease")} | {_s(f) for f in self._redis.hkeys(self._prefix + ":quar")}
        out = []
        try:
            with os.scandir(self._tmp_s) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False) and e.name.endswith(".part"):
                        fence = e.name[:-5].rsplit(".", 1)[-1]
                        if fence not in fences:
                            out.append(e.path)
        except FileNotFoundError:
            pass
        return sorted(out)

    def dead_writing_rows(self) -> list[Row]:
        return []

    @contextmanager
    def surgery(self) -> Iterator["RedisSurgery"]:  # type: ignore[override]
        """Row checks and fixes for verify. Each change is one script: atomic, but not one transaction."""
        self._ensure_open()
        with self._evictor(self.wait_timeout) as got:
            if not got:
                raise CacheBusy(f"cache {self.root} is being evicted from; try verify again")
            yield RedisSurgery(self)

    # ---------------------------------------------------------------------------- lifecycle
    def __getstate__(self) -> dict[str, Any]:
        return dict(self._init_args)

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, max_size={self.max_bytes}, index={self.url_shown!r}, node={self.node!r})"

    def close(self) -> None:
        if self._closed:
            return
        if self._pid == os.getpid() and not self.readonly:
            try:
                self._flush_touches()
            except CacheError:
                pass
        self._close_handles()

    def _close_handles(self) -> None:
        self._closed = True
        r = getattr(self, "_renewer", None)
        if r is not None:
            r.wake.set()
        red = getattr(self, "_redis", None)
        if red is not None and getattr(self, "_pid", os.getpid()) == os.getpid():
            try:
                red.close()
            except Exception:
                pass
        ev = getattr(self, "events", None)
        if ev is not None:
            ev.close()


class RedisSurgery:
    """:class:`~.integrity.IndexSurgery`'s methods for a Redis index (used by verify)."""

    def __init__(self, cache: RedisCache) -> None:
        self._cache = cache

    def live_row(self, key: str) -> Row | None:
        return self._cache._row(key)

    def owned_name(self, name: str) -> bool:
        key = name_to_key(name)
        r = self._cache._row(key) if key is not None else None
        if r is not None and r.name == name:
            return True
        return bool(self._cache._redis.hexists(self._cache._prefix + ":doomed", name))

    def journaled(self, name: str) -> bool:
        """True if a live lease will take this name (a put in flight on some node)."""
        c = self._cache
        for v in c._redis.hvals(c._prefix + ":lease"):
            if json.loads(_s(v)).get("n") == name:
                return True
        return False

    def row_present(self, row: Row) -> bool:
        r = self._cache._row(row.key)
        return r is not None and r.name == row.name

    def counters(self) -> Counters:
        return self._cache._index_counters()

    def counter_differences(self) -> list[str]:
        res = self._cache._script("recount", "check")
        out = []
        for i in range(0, len(res), 3):
            if int(res[i + 1]) != int(res[i + 2]):
                out.append(f"{_s(res[i])} {int(res[i + 1])} != {int(res[i + 2])} from records")
        return out

    def drop_row(self, row: Row) -> None:
        self._cache._ensure_writable()
        self._cache._script("drop_row", row.key, row.name)

    def reindex(self, row: Row, ino: int, checksum: str) -> None:
        self._cache._ensure_writable()
        self._cache._script("drop_row", row.key, row.name)
        self.adopt_orphan(row.key, row.name, row.size, ino, checksum)

    def drop_entry(self, key: str) -> None:
        self._cache.delete(key)

    def adopt_orphan(self, key: str, name: str, size: int, ino: int, checksum: str) -> bool:
        """Index a sound file no row knows. A key's newest version (highest fence) wins; an older
        one found later is refused (False) and verify deletes it."""
        c = self._cache
        c._ensure_writable()
        m = _VERSION_RE.search(name)
        fence = int(m.group(1), 16) if m else 0
        charge = c._charge(size)
        try:
            st = os.stat(c.root / name)
            created_ms = int(st.st_mtime * 1000)
        except OSError:
            created_ms = int(time.time() * 1000)
        row = json.dumps({"n": name, "s": size, "c": charge, "h": checksum, "i": str(ino), "o": "verify", "f": fence, "t": created_ms})
        return int(c._script("adopt", key, row, size, charge, fence)) == 1

    def recount(self) -> Counters:
        self._cache._ensure_writable()
        self._cache._script("recount", "fix")
        return self.counters()


class _LeaseLost(Exception):
    pass


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _to_row(key: str, raw: Any) -> Row:
    d = json.loads(_s(raw))
    t = float(d.get("t", 0)) / 1000
    ino = d.get("i")
    return Row(int(d.get("f", 0)), key, str(d["n"]), int(d["s"]), int(d["c"]), LIVE, d.get("o"), None,
               d.get("h"), int(ino) if ino not in (None, "") else None, t, t)


_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400
_linkat: Any = ctypes.CDLL(None, use_errno=True).linkat
_linkat.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_linkat.restype = ctypes.c_int


def _link_fd(fd: int, final: str) -> None:
    """Give the open file a second name, only if ``final`` is free and the file still has a name.

    ``linkat`` through ``/proc/self/fd`` fails with ENOENT when the ``.part`` was unlinked
    (a reconciler took the lease back): a stalled writer cannot bring its bytes back.
    """
    src = f"/proc/self/fd/{fd}".encode()
    dst = os.fsencode(final)
    for _attempt in range(3):
        try:
            # (os.link would call link(2), which links the magic symlink itself: EXDEV.)
            if _linkat(_AT_FDCWD, src, _AT_FDCWD, dst, _AT_SYMLINK_FOLLOW) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), final)
            return
        except FileNotFoundError:
            if os.fstat(fd).st_nlink == 0:
                raise _LeaseLost() from None  # the .part has no name any more: a reconciler took it
            # The shard directory is not there (yet: another writer may be making it now).
            os.makedirs(os.path.dirname(final), exist_ok=True)
        except FileExistsError:
            raise CacheError(
                f"{final} exists already: this cache's index was rebuilt without its fence counter; "
                f"run `cachewatch verify {os.path.dirname(os.path.dirname(final))} --repair`"
            ) from None
    raise _LeaseLost()


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        pass


def _unlink_if(path: str, ino: int | None) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if _stat.S_ISREG(st.st_mode) and (ino is None or st.st_ino == ino):
        _unlink_quiet(path)


def _remove_any(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if _stat.S_ISDIR(st.st_mode):
            os.rmdir(path)  # a tombstone a stalled writer moved (it can only be empty)
        else:
            os.unlink(path)
    except OSError:
        pass


def _tombstone(part: str) -> None:
    """Replace a ``.part`` (or its absence) with an empty directory: its writer can no longer
    create it (O_EXCL fails) nor link it (its inode has no name)."""
    for _attempt in range(4):
        try:
            os.mkdir(part)
            return
        except FileExistsError:
            try:
                os.unlink(part)
            except IsADirectoryError:
                return  # already a tombstone
            except FileNotFoundError:
                pass
        except FileNotFoundError:
            os.makedirs(os.path.dirname(part), exist_ok=True)
