"""``WatchedDirectory``: a cache directory written by other code, kept under its limit from outside.

It ties the parts together: a full scan builds the index (:mod:`.tree`), watchdog
events keep it current (:mod:`.observer`), an enforcer thread evicts least
recently used files down to the target as soon as the size passes max
(:mod:`.enforcer`), and a monitor thread samples growth, raises alerts and runs
the reconciling scan every ``scan_interval`` (or at once when events were lost).

Threads: watchdog's (events), ``enforcer`` and ``monitor``. One lock guards the
index; nothing slow runs under it except the swap at the end of a scan.

Eviction events go to ``<state dir>/events.jsonl`` in the managed cache's format
(``kind="eviction"``, reason, files, bytes, size_before, size_after, keys, ...),
plus ``watch.started``, ``watch.scan``, ``watch.dry_run``, ``watch.stopped`` and
``alert`` events.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..cache.types import EvictionReport
from ..config import WatchConfig, target_bytes
from ..events import EventLog
from ..sizes import SizeError, format_size, parse_duration, parse_size
from ._scan_worker import ScanChunk
from .accesstime import AccessTimeSource, detect_access_source
from .enforcer import Enforcer, PassOutcome, RootChanged
from .errors import WatchError
from .filters import PathFilter
from .growth import GrowthTracker, WatchAlert, alerts_for
from .roots import ALLOW_FLAG, dangerous_root_reason
from .scanner import RootIdentity, Scanner, ScanReport
from .state import EVENTS_FILE, default_state_dir, lock_state_dir, prepare_state_dir
from .stats import WatchStats
from .tree import FileIndex, IndexedFile

__all__ = ["WatchedDirectory"]

log = logging.getLogger("cachewatch.watch")

_BLOCKED_RETRY_S = 0.5
# The event thread is busy Python while a writer runs flat out; at the default 5 ms switch
# interval every system call of the eviction thread (stat, unlink) may wait that long for
# the GIL. 1 ms cut the time from crossing max to the first unlink from ~0.2-0.4 s to ~0.06 s
# and the overshoot by 3x in benchmarks/bench_watch.py.
_SWITCH_INTERVAL_S = 0.001


def _release_free_memory() -> None:
    """Give the scan's freed buffers back to the OS (glibc keeps them otherwise; RSS is what people see)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None
_DRY_RUN_REPEAT_S = 60.0
_NO_EVENTS_SCAN_S = 60.0


def _size(value: Any, what: str) -> int:
    try:
        return parse_size(value, what=what)
    except SizeError as exc:
        raise WatchError(str(exc)) from None


def _duration(value: Any, what: str) -> float:
    try:
        return parse_duration(value, what=what)
    except SizeError as exc:
        raise WatchError(str(exc)) from None


class WatchedDirectory:
    """Track and bound a directory that other code writes.

    ``writer_pids``: the processes whose open files protect a file from eviction
    (an iterable, or a callable returning one, e.g. a training's process tree);
    None checks every process this user can inspect.
    ``scan_workers``: processes for the full scan (None: one per CPU, up to 8; 0: in-process).
    ``allow_dangerous_root``: accept a system directory or one holding the home directory
    (refused otherwise, see :mod:`.roots`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        max_size: int | str,
        *,
        target_ratio: float = 0.9,
        target_size: int | str | None = None,
        include: Iterable[str] | str = (),
        exclude: Iterable[str] | str = (),
        min_age: float | str = 30.0,
        scan_interval: float | str = 300.0,
        dry_run: bool = False,
        state_dir: str | os.PathLike | None = None,
        writer_pids: Iterable[int] | Callable[[], Iterable[int]] | None = None,
        scan_workers: int | None = None,
        sample_interval: float = 1.0,
        growth_window: float = 60.0,
        alert_horizon: float = 3600.0,
        allow_dangerous_root: bool = False,
    ) -> None:
        path = Path(os.path.abspath(os.path.expanduser(root)))
        if not path.exists():
            raise WatchError(f"watch root '{path}' does not exist; create it or fix the path")
        if path.is_symlink() or not path.is_dir():
            kind = "a symlink" if path.is_symlink() else "not a directory"
            raise WatchError(f"watch root '{path}' is {kind}; give the cache directory itself")
        real = os.path.realpath(path)
        danger = None if allow_dangerous_root else dangerous_root_reason(real)
        if danger is not None:
            raise WatchError(f"watch root '{real}' {danger}; give the cache directory itself "
                             f"(or pass {ALLOW_FLAG}, allow_dangerous_root = true in [[watch]], if you truly mean it)")
        st = os.stat(real)
        self.root = RootIdentity(real, st.st_dev, st.st_ino)
        self.max_bytes = _size(max_size, "max_size")
        if self.max_bytes <= 0:
            raise WatchError(f"max_size = {max_size!r} leaves no room; give a positive size like '100GB'")
        if not (0.0 < float(target_ratio) <= 1.0):
            raise WatchError(f"target_ratio = {target_ratio!r} is out of range; write a number in (0, 1], e.g. 0.9")
        tsize = None if target_size is None else _size(target_size, "target_size")
        if tsize is not None and tsize > self.max_bytes:
            raise WatchError(
                f"target_size = {target_size!r} is above max_size = {max_size!r}; the target must be at most the max"
            )
        self.target_bytes = target_bytes(self.max_bytes, float(target_ratio), tsize)
        self.filter = PathFilter(tuple([include] if isinstance(include, str) else include),
                                 tuple([exclude] if isinstance(exclude, str) else exclude))
        self.min_age_s = _duration(min_age, "min_age")
        self.scan_interval_s = _duration(scan_interval, "scan_interval")
        if self.scan_interval_s <= 0:
            raise WatchError(f"scan_interval = {scan_interval!r} must be positive, e.g. '5m'")
        self.dry_run = bool(dry_run)
        self.state_dir = Path(os.path.abspath(os.path.expanduser(state_dir))) if state_dir is not None else default_state_dir(real)
        self.writer_pids = writer_pids
        self.sample_interval_s = float(sample_interval)
        self.alert_horizon_s = float(alert_horizon)
        self.access: AccessTimeSource = detect_access_source(real)
        self.events = EventLog(self.state_dir / EVENTS_FILE, source=f"watch:{real}")
        self._scanner = Scanner(self.root, self.filter, self.access.use_atime, scan_workers)
        self._enforcer = Enforcer(self.root, min_age_s=self.min_age_s, writer_pids=writer_pids)
        self._growth = GrowthTracker(window_s=growth_window)

        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._tree = FileIndex()
        self._touched: set[str] | None = None  # paths with events during a scan
        self._touched_dirs: set[str] | None = None
        self._wake = threading.Event()
        self._rescan = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observer: Any = None
        self._running = False
        self._events_ok = False
        self._root_ok = True
        # counters
        self._evicted_files = self._evicted_bytes = 0
        self._would_files = self._would_bytes = 0
        self._young = self._open = 0
        self._scans = 0
        self._last_scan: ScanReport | None = None
        self._last_correction = 0
        self._disk: tuple[int, int] | None = None
        self._growth_est = self._growth.estimate(0, self.max_bytes, None, not self.dry_run)
        self._alerts: tuple[WatchAlert, ...] = ()
        self._last_dry_report = 0.0
        self._over_since: float | None = None  # when the index first showed more than max (for the event log)
        self._listeners: list[Callable[[EvictionReport], None]] = []
        self._lock_fd: int | None = None
        self._unreadable: tuple[str, ...] = ()  # absolute paths, from the last full scan
        self._warned_unreadable: set[str] = set()  # each one is warned about once per watch

    @classmethod
    def from_config(cls, cfg: WatchConfig, **kwargs: Any) -> "WatchedDirectory":
        """A watcher for one ``[[watch]]`` entry; ``kwargs`` override or add (writer_pids, scan_workers...)."""
        values: dict[str, Any] = dict(
            target_ratio=cfg.target_ratio,
            target_size=cfg.target_size,
            include=cfg.include,
            exclude=cfg.exclude,
            min_age=cfg.min_age,
            scan_interval=cfg.scan_interval,
            dry_run=cfg.dry_run,
            state_dir=cfg.state_dir,
            allow_dangerous_root=cfg.allow_dangerous_root,
        )
        values.update(kwargs)
        return cls(cfg.root, cfg.max_size, **values)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> "WatchedDirectory":
        """Scan, start watching and enforcing. Returns once the index is complete."""
        if self._running:
            return self
        self.state_dir = prepare_state_dir(self.state_dir, self.root.path)
        self._lock_fd = lock_state_dir(self.state_dir, self.root.path)
        self._stopping.clear()
        self._growth.reset()
        if sys.getswitchinterval() > _SWITCH_INTERVAL_S:
            sys.setswitchinterval(_SWITCH_INTERVAL_S)  # process-wide, on purpose: see above
        # Events first, then the scan: a file written in between is seen by one or the other.
        try:
            from .observer import start_observer

            self._observer = start_observer(self.root.path, self)
            self._events_ok = True
        except OSError as exc:  # e.g. the inotify watch limit: scans still keep the size right
            self._events_ok = False
            self._observer = None
            log.warning("watch %s: filesystem events unavailable (%s); relying on scans", self.root.path, exc)
        try:
            report = self._reconcile()
        except BaseException:
            self._stop_observer()
            self._unlock()
            raise
        self._running = True
        self._event(
            "watch.started",
            root=self.root.path,
            max_bytes=self.max_bytes,
            target_bytes=self.target_bytes,
            dry_run=self.dry_run,
            size_bytes=report.bytes,
            entries=report.files,
            scan_s=round(report.duration_s, 4),
            access_source=self.access.source,
            events=self._events_ok,
            pid=os.getpid(),
        )
        self._sample()
        for name, target in (("enforcer", self._enforce_loop), ("monitor", self._monitor_loop)):
            t = threading.Thread(target=target, name=f"cachewatch-watch-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self._tree.size_bytes > self.max_bytes:
            self._wake.set()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching and enforcing; a pass in progress finishes its current file first."""
        if not self._running:
            self._stop_observer()
            return
        self._stopping.set()
        self._wake.set()
        self._rescan.set()
        self._stop_observer()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        self._running = False
        self._unlock()
        self._event("watch.stopped", root=self.root.path, size_bytes=self._tree.size_bytes,
                           evicted_files=self._evicted_files, evicted_bytes=self._evicted_bytes, pid=os.getpid())

    def _event(self, kind: str, /, **fields: Any) -> None:
        # Best effort: a full disk or a removed state directory must not stop enforcement.
        try:
            self.events.append(kind, **fields)
        except OSError as exc:
            log.warning("watch %s: event %s not written (%s)", self.root.path, kind, exc)

    def _observer_alive(self) -> bool:
        obs = self._observer
        if obs is None:
            return False
        threads = [obs, *obs.emitters]
        reader = getattr(obs, "_inotify_fd", None)  # watchdog's inotify reader thread, where it has one
        if isinstance(reader, threading.Thread):
            threads.append(reader)
        return all(t.is_alive() for t in threads)

    def _check_observer(self) -> None:
        """A dead observer (an exception inside watchdog) is replaced, and a scan covers the gap."""
        if not self._running or self._stopping.is_set() or self._observer is None or self._observer_alive():
            return
        log.warning("watch %s: the filesystem observer stopped; restarting it", self.root.path)
        self._stop_observer()
        try:
            from .observer import start_observer

            self._observer = start_observer(self.root.path, self)
            self._events_ok = True
        except OSError as exc:
            log.warning("watch %s: filesystem events unavailable (%s); relying on scans", self.root.path, exc)
            return
        self._rescan.set()

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _stop_observer(self) -> None:
        obs, self._observer = self._observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(5.0)
            except Exception:  # pragma: no cover - best effort
                log.debug("observer stop failed", exc_info=True)
        self._events_ok = False

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "WatchedDirectory":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        return self._running

    def add_listener(self, fn: Callable[[EvictionReport], None]) -> None:
        """Call ``fn(report)`` after each eviction pass that removed (or would remove) files."""
        self._listeners.append(fn)

    # ------------------------------------------------------------------ events (watchdog thread)
    def _split(self, rel: str) -> tuple[str, bytes]:
        d, _, name = rel.rpartition("/")
        return d, os.fsencode(name)

    def _refresh_locked(self, rel: str, access: float | None) -> None:
        """Bring one path of the index in line with the disk (lstat; never follows a symlink)."""
        if not self.filter.is_trivial and not self.filter.counts(rel):
            return
        drel, nb = self._split(rel)
        tree = self._tree
        try:
            st = os.stat(f"{self.root.path}/{rel}", follow_symlinks=False)
        except OSError:
            d = tree.dir_id(drel, create=False)
            if d is not None:
                tree.remove(d, nb)
            return
        d = tree.dir_id(drel)
        assert d is not None
        if stat.S_ISREG(st.st_mode) and st.st_dev == self.root.dev:
            tree.upsert(d, nb, st.st_size, access)
        else:
            tree.remove(d, nb)

    def _after_event(self) -> None:
        if self._tree.size_bytes > self.max_bytes:
            if self._over_since is None:
                self._over_since = time.time()
            if not self._wake.is_set():
                self._wake.set()

    def file_changed(self, rel: str) -> None:
        with self._lock:
            if self._touched is not None:
                self._touched.add(rel)
            self._refresh_locked(rel, time.time())
        self._after_event()

    def file_opened(self, rel: str) -> None:
        now = time.time()
        with self._lock:
            if self._touched is not None:
                self._touched.add(rel)
            drel, nb = self._split(rel)
            d = self._tree.dir_id(drel, create=False)
            if d is None or not self._tree.touch(d, nb, now):
                self._refresh_locked(rel, now)
        self._after_event()

    def file_deleted(self, rel: str) -> None:
        with self._lock:
            if self._touched is not None:
                self._touched.add(rel)
            drel, nb = self._split(rel)
            d = self._tree.dir_id(drel, create=False)
            if d is not None:
                self._tree.remove(d, nb)

    def file_moved(self, src: str, dst: str | None) -> None:
        self.file_deleted(src)
        if dst:
            self.file_changed(dst)

    def dir_created(self, rel: str) -> None:
        with self._lock:
            if self._touched_dirs is not None:
                self._touched_dirs.add(rel)
            self._tree.dir_id(rel)

    def dir_deleted(self, rel: str) -> None:
        with self._lock:
            if self._touched_dirs is not None:
                self._touched_dirs.add(rel)
            self._tree.remove_dir_tree(rel)

    def dir_moved(self, src: str, dst: str | None) -> None:
        with self._lock:
            if self._touched_dirs is not None:
                self._touched_dirs.add(src)
                if dst:
                    self._touched_dirs.add(dst)
            if dst:
                self._tree.move_dir_tree(src, dst)
            else:
                self._tree.remove_dir_tree(src)
        self._after_event()

    def root_gone(self) -> None:
        self._root_ok = False
        self._events_ok = False

    def events_lost(self) -> None:
        self._rescan.set()

    # ------------------------------------------------------------------ scans
    def _reconcile(self, reason: str = "start") -> ScanReport:
        # One scan at a time: a second one would reset the set of paths touched during the first.
        with self._scan_lock:
            return self._reconcile_locked(reason)

    def _reconcile_locked(self, reason: str) -> ScanReport:
        with self._lock:
            self._touched = set()
            self._touched_dirs = set()
        try:
            chunk, report = self._scanner.scan()
        except OSError as exc:
            with self._lock:
                self._touched = self._touched_dirs = None
            if not self._running:
                raise WatchError(f"watch root '{self.root.path}' cannot be scanned ({exc}); check the path") from None
            self._root_ok = False
            raise
        with self._lock:
            new = FileIndex.from_chunk(chunk, previous=self._tree)
            touched, touched_dirs = self._touched or set(), self._touched_dirs or set()
            self._touched = self._touched_dirs = None
            old_tree, self._tree = self._tree, new
            for rel in sorted(touched_dirs, key=len):
                self._rescan_dir_locked(rel)
            now = time.time()
            for rel in touched:
                self._refresh_locked(rel, None)
                drel, nb = self._split(rel)
                d = new.dir_id(drel, create=False)
                if d is not None:
                    prev = None
                    od = old_tree.dir_id(drel, create=False)
                    if od is not None:
                        prev = old_tree.get(od, nb)
                    new.touch(d, nb, prev[1] if prev else now)
            correction = new.size_bytes - old_tree.size_bytes
        self._scans += 1
        self._last_scan = report
        self._note_unreadable(report.unreadable)
        self._last_correction = correction if reason != "start" else 0
        self._root_ok = True
        if reason != "start":
            self._event(
                "watch.scan",
                reason=reason,
                files=report.files,
                bytes=report.bytes,
                correction_bytes=correction,
                duration_s=round(report.duration_s, 4),
                workers=report.workers,
                vanished=report.vanished,
                errors=report.errors,
            )
        del chunk, old_tree
        _release_free_memory()
        if self._tree.size_bytes > self.max_bytes:
            self._wake.set()
        return report

    def _note_unreadable(self, rels: tuple[str, ...]) -> None:
        """Keep the directories the scan could not read for stats(); warn once about each new one."""
        paths = tuple(os.path.join(self.root.path, r) if r else self.root.path for r in rels)
        self._unreadable = paths
        new = [p for p in paths if p not in self._warned_unreadable]
        if not new:
            return
        self._warned_unreadable.update(new)
        shown = ", ".join(new[:3]) + (f" and {len(new) - 3} more" if len(new) > 3 else "")
        log.warning("watch %s: cannot read %d director%s (%s); their files are not counted, so the size is too low; "
                    "give this user read access or exclude them", self.root.path, len(new), "y" if len(new) == 1 else "ies",
                    shown)
        self._event("watch.unreadable", paths=list(new))

    def _rescan_dir_locked(self, rel: str) -> None:
        self._tree.remove_dir_tree(rel)
        try:
            chunk = self._scanner.scan_subtree(rel)
        except OSError:
            return
        self._add_chunk_locked(chunk)

    def _add_chunk_locked(self, chunk: ScanChunk) -> None:
        names = bytes(chunk.names).split(b"\0")
        i = 0
        for rel, count in zip(chunk.dirs, chunk.counts):
            d = self._tree.dir_id(rel)
            assert d is not None
            for _ in range(count):
                self._tree.upsert(d, names[i], chunk.sizes[i], chunk.access[i])
                i += 1

    def check_once(self) -> tuple[ScanReport, EvictionReport | None]:
        """Without starting: scan, and if over max evict down to the target (or with dry_run say what would go)."""
        if self._running:
            raise WatchError(f"watch of '{self.root.path}' is running; check_once() is for a watch that is not started")
        self.state_dir = prepare_state_dir(self.state_dir, self.root.path)
        self._lock_fd = lock_state_dir(self.state_dir, self.root.path)
        try:
            report = self._reconcile()
            self._sample()
            if self._tree.size_bytes <= self.max_bytes:
                return report, None
            r = self._pass(self.target_bytes, "max", self.dry_run).report
            self._sample()
            return report, r
        except RootChanged as exc:
            raise WatchError(f"watch root '{self.root.path}' changed ({exc.strerror}); nothing was evicted") from None
        finally:
            self._unlock()

    def scan(self) -> ScanReport:
        """Run a reconciling scan now and return what it found."""
        if not self._running:
            raise WatchError(f"watch of '{self.root.path}' is not running; call start() first")
        return self._reconcile("manual")

    # ------------------------------------------------------------------ enforcement
    # EvictionSource for the enforcer
    def size_bytes(self) -> int:
        return self._tree.size_bytes

    def candidates(self, count: int) -> list[tuple[str, bytes, int, float]]:
        # Directory paths, not ids: a scan may swap the index (and its ids) during a pass.
        with self._lock:
            tree = self._tree
            return [(tree.dir_path(d) or "", nb, size, acc) for d, nb, size, acc in tree.lru_candidates(count)]

    def after_unlink(self, rel_dir: str, name: bytes, dir_fd: int) -> None:
        with self._lock:
            tree = self._tree
            d = tree.dir_id(rel_dir, create=False)
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                if d is not None:
                    tree.remove(d, name)
                return
            if d is None:
                return
            if stat.S_ISREG(st.st_mode):  # written again under the same name since
                tree.upsert(d, name, st.st_size, time.time())
            else:
                tree.remove(d, name)

    def _pass(self, goal: int, reason: str, dry_run: bool) -> PassOutcome:
        outcome = self._enforcer.run_pass(self, goal, reason, dry_run=dry_run, stop=self._stopping)
        r = outcome.report
        self._young, self._open = outcome.skipped_young, outcome.skipped_open
        if dry_run:
            self._would_files, self._would_bytes = r.files, r.bytes
            if r.files or outcome.skipped_young or outcome.skipped_open:
                self._event(
                    "watch.dry_run", time_s=r.time, reason=reason, files=r.files, bytes=r.bytes,
                    size_before=r.size_before, size_after=r.size_after, max_bytes=self.max_bytes,
                    target_bytes=self.target_bytes, keys=list(r.keys), keys_truncated=max(0, r.files - len(r.keys)),
                    skipped_young=outcome.skipped_young, skipped_open=outcome.skipped_open, pid=os.getpid(),
                )
        elif r.files:
            self._evicted_files += r.files
            self._evicted_bytes += r.bytes
            self._event(
                "eviction",
                time_s=r.time,
                reason=reason,
                files=r.files,
                bytes=r.bytes,
                size_before=r.size_before,
                size_after=r.size_after,
                max_bytes=self.max_bytes,
                target_bytes=self.target_bytes,
                keys=list(r.keys),
                keys_truncated=max(0, r.files - len(r.keys)),
                pinned_skipped=r.pinned_skipped,
                skipped_young=outcome.skipped_young,
                skipped_open=outcome.skipped_open,
                skipped_other=outcome.skipped_other,
                vanished=outcome.vanished,
                duration_s=round(r.duration_s, 4),
                first_unlink_time=outcome.first_unlink_time,
                over_max_since=self._over_since,
                root=self.root.path,
                pid=os.getpid(),
            )
        if r.files:
            log.info(r.describe(self.root.path))
            for fn in list(self._listeners):
                try:
                    fn(r)
                except Exception:  # a listener must not stop enforcement
                    log.debug("eviction listener failed", exc_info=True)
        return outcome

    def evict(self, to: int | str | None = None, *, dry_run: bool | None = None) -> EvictionReport:
        """Evict least recently used files now, down to ``to`` (default: the target), with every safety check."""
        goal = self.target_bytes if to is None else _size(to, "to")
        try:
            return self._pass(goal, "manual", self.dry_run if dry_run is None else dry_run).report
        except RootChanged as exc:
            self._root_ok = False
            raise WatchError(f"watch root '{self.root.path}' changed ({exc.strerror}); nothing was evicted") from None

    def _enforce_loop(self) -> None:
        # A cache found over max at start is brought down first, as the managed cache does.
        reason = "startup" if self._tree.size_bytes > self.max_bytes else "max"
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                break
            if self._tree.size_bytes <= self.max_bytes or not self._root_ok:
                reason = "max"
                self._young = self._open = 0
                self._over_since = None
                continue
            try:
                if self.dry_run:
                    # Report what would go at most once a minute while over max.
                    wait = self._last_dry_report + _DRY_RUN_REPEAT_S - time.time()
                    if wait > 0:
                        self._stopping.wait(wait)
                        self._wake.set()
                        continue
                    self._last_dry_report = time.time()
                    self._pass(self.target_bytes, reason, True)
                    reason = "max"
                    self._wake.set()
                    continue
                outcome = self._pass(self.target_bytes, reason, False)
            except RootChanged:
                self._root_ok = False
                continue
            except Exception:  # keep enforcing after an unexpected error; it is logged
                log.exception("watch %s: eviction pass failed", self.root.path)
                self._stopping.wait(_BLOCKED_RETRY_S)
                self._wake.set()
                continue
            reason = "max"
            if self._tree.size_bytes > self.max_bytes:
                if outcome.report.files == 0 and outcome.vanished == 0:
                    # What is left may not go yet (too new, open for writing): retry soon, not per event.
                    self._stopping.wait(_BLOCKED_RETRY_S)
                self._wake.set()  # writers outran the pass: go again

    # ------------------------------------------------------------------ monitoring
    def _sample(self) -> None:
        now = time.time()
        try:
            vfs = os.statvfs(self.root.path)
            self._disk = (vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize)
        except OSError:
            self._disk = None
        size = self._tree.size_bytes
        self._growth.add(now, size, self._evicted_bytes)
        est = self._growth.estimate(size, self.max_bytes, self._disk[0] if self._disk else None, not self.dry_run)
        self._growth_est = est
        alerts = alerts_for(
            size_bytes=size,
            max_bytes=self.max_bytes,
            dry_run=self.dry_run,
            growth=est,
            horizon_s=self.alert_horizon_s,
            blocked_files=self._young + self._open,
            events_ok=self._events_ok,
            root_ok=self._root_ok,
            watching=self._running,
        )
        old = {a.kind for a in self._alerts}
        new = {a.kind for a in alerts}
        for a in alerts:
            if a.kind not in old:
                self._event("alert", alert=a.kind, level=a.level, message=a.message, root=self.root.path)
        for kind in old - new:
            self._event("alert.cleared", alert=kind, root=self.root.path)
        self._alerts = alerts

    def _monitor_loop(self) -> None:
        next_scan = time.monotonic() + self._scan_period()
        while not self._stopping.is_set():
            due = next_scan - time.monotonic()
            if self._rescan.wait(min(self.sample_interval_s, max(0.0, due))):
                self._rescan.clear()
                if self._stopping.is_set():
                    break
                self._scan_quietly("events_lost")
                next_scan = time.monotonic() + self._scan_period()
            elif time.monotonic() >= next_scan:
                self._scan_quietly("interval")
                next_scan = time.monotonic() + self._scan_period()
            try:
                self._check_observer()
                self._sample()
            except Exception:  # pragma: no cover - sampling must not end the watch
                log.debug("sample failed", exc_info=True)

    def _scan_period(self) -> float:
        return self.scan_interval_s if self._events_ok else min(self.scan_interval_s, _NO_EVENTS_SCAN_S)

    def _scan_quietly(self, reason: str) -> None:
        try:
            self._reconcile(reason)
        except Exception:
            log.warning("watch %s: reconciling scan failed", self.root.path, exc_info=True)

    # ------------------------------------------------------------------ reading
    def stats(self) -> WatchStats:
        with self._lock:
            size, entries, index_bytes = self._tree.size_bytes, self._tree.entries, self._tree.memory_bytes()
        est = self._growth_est
        scan = self._last_scan
        return WatchStats(
            root=self.root.path,
            size_bytes=size,
            entries=entries,
            max_bytes=self.max_bytes,
            target_bytes=self.target_bytes,
            evicted_files=self._evicted_files,
            evicted_bytes=self._evicted_bytes,
            kind="watch",
            running=self._running,
            events_ok=self._events_ok,
            dry_run=self.dry_run,
            min_age_s=self.min_age_s,
            would_evict_files=self._would_files,
            would_evict_bytes=self._would_bytes,
            skipped_young_files=self._young,
            skipped_open_files=self._open,
            growth_bytes_per_min=est.growth_bytes_per_min,
            write_bytes_per_min=est.write_bytes_per_min,
            time_to_max_s=est.time_to_max_s,
            time_to_disk_full_s=est.time_to_disk_full_s,
            disk_free_bytes=self._disk[0] if self._disk else None,
            disk_total_bytes=self._disk[1] if self._disk else None,
            access_source=self.access.source,
            access_source_reason=self.access.reason,
            scans=self._scans,
            last_scan_time=scan.time if scan else None,
            last_scan_duration_s=scan.duration_s if scan else None,
            last_scan_correction_bytes=self._last_correction,
            index_bytes=index_bytes,
            state_dir=str(self.state_dir),
            events_path=str(self.events.path),
            alerts=self._alerts,
            time=time.time(),
            unreadable_paths=self._unreadable,
        )

    def files(self, order: str = "lru", limit: int | None = None) -> list[IndexedFile]:
        """Counted files, least recently used first (or ``order="size"``, largest first)."""
        with self._lock:
            out = []
            for f in self._tree.iter_files(order):
                if limit is not None and len(out) >= limit:
                    break
                out.append(f)
            return out

    def eviction_log(self, limit: int | None = None, *, newest_first: bool = True) -> list[EvictionReport]:
        """Past evictions of this root from the events file, newest first."""
        events = self.events.read(kinds=("eviction",), limit=limit, newest_first=newest_first)
        return [EvictionReport.from_event(e) for e in events]

    def describe(self) -> str:
        s = self.stats()
        return (
            f"{self.root.path}: {format_size(s.size_bytes)} in {s.entries} files "
            f"(max {format_size(s.max_bytes)}, target {format_size(s.target_bytes)})"
        )

    def check_index(self) -> None:
        """Assert the index is internally consistent (tests)."""
        with self._lock:
            self._tree.check()
