"""The training's process tree: every descendant of its root pid, with CPU and memory, and its workers.

CPU percent is measured between two samples, so the ``psutil.Process`` objects are kept
from one sample to the next (keyed by pid, and by creation time so a reused pid is a
new process). A process seen for the first time has ``cpu_percent`` None. Processes that
end between the listing and the reading are normal: they are left out of the snapshot
and named in ``vanished_pids``.

RSS is summed as the kernel reports it per process; pages shared between the root and
forked workers count once per process, so ``rss_bytes_total`` is an upper bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import psutil

from .errors import MonitorError
from .sampler import DEFAULT_HISTORY_LEN, BackgroundSampler
from .workers import DETECT_NONE, WORKER_PROCESS_NAME, WorkerCandidate, find_workers, read_thread_names

__all__ = ["ProcessInfo", "TreeSnapshot", "ProcessTreeSampler", "ROLE_ROOT", "ROLE_WORKER", "ROLE_CHILD"]

ROLE_ROOT = "root"
ROLE_WORKER = "worker"
ROLE_CHILD = "child"

# A process's command line and thread names settle within moments of its start (exec, then
# torch naming the worker); after this age they are read once and kept.
_SETTLE_S = 5.0


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    name: str
    role: str  # "root", "worker" or "child"
    status: str  # psutil status: "running", "sleeping", "stopped", "zombie"...
    cpu_percent: float | None  # percent of one core since the previous sample (over 100 with several threads)
    rss_bytes: int | None
    create_time: float

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "name": self.name,
            "role": self.role,
            "status": self.status,
            "cpu_percent": self.cpu_percent,
            "rss_bytes": self.rss_bytes,
            "create_time": self.create_time,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ProcessInfo":
        return cls(
            pid=int(d["pid"]),
            ppid=int(d["ppid"]),
            name=str(d["name"]),
            role=str(d["role"]),
            status=str(d["status"]),
            cpu_percent=None if d.get("cpu_percent") is None else float(d["cpu_percent"]),
            rss_bytes=None if d.get("rss_bytes") is None else int(d["rss_bytes"]),
            create_time=float(d.get("create_time", 0.0)),
        )


@dataclass(frozen=True)
class TreeSnapshot:
    """The training's processes at one instant (root first, then by pid)."""

    time: float
    root_pid: int | None
    root_alive: bool
    processes: tuple[ProcessInfo, ...]
    worker_detection: str  # which rule found the workers (see workers.py), "none" if none
    vanished_pids: tuple[int, ...] = ()  # seen at the previous sample (or listed now), gone now
    reason: str | None = None  # why the tree is empty: no training, or its root has exited

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.processes)

    @property
    def worker_pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.processes if p.role == ROLE_WORKER)

    @property
    def worker_count(self) -> int:
        return len(self.worker_pids)

    @property
    def root(self) -> ProcessInfo | None:
        return next((p for p in self.processes if p.role == ROLE_ROOT), None)

    @property
    def cpu_percent_total(self) -> float | None:
        """Sum over the tree, in percent of one core; None before a second sample."""
        values = [p.cpu_percent for p in self.processes if p.cpu_percent is not None]
        return sum(values) if values else None

    @property
    def rss_bytes_total(self) -> int:
        return sum(p.rss_bytes or 0 for p in self.processes)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "root_pid": self.root_pid,
            "root_alive": self.root_alive,
            "processes": [p.to_json() for p in self.processes],
            "worker_detection": self.worker_detection,
            "vanished_pids": list(self.vanished_pids),
            "reason": self.reason,
            # derived, for clients that only read JSON
            "worker_pids": list(self.worker_pids),
            "worker_count": self.worker_count,
            "cpu_percent_total": self.cpu_percent_total,
            "rss_bytes_total": self.rss_bytes_total,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TreeSnapshot":
        return cls(
            time=float(d["time"]),
            root_pid=None if d.get("root_pid") is None else int(d["root_pid"]),
            root_alive=bool(d.get("root_alive", False)),
            processes=tuple(ProcessInfo.from_json(p) for p in d.get("processes", ())),
            worker_detection=str(d.get("worker_detection", DETECT_NONE)),
            vanished_pids=tuple(int(p) for p in d.get("vanished_pids", ())),
            reason=d.get("reason"),
        )


class _Tracked:
    """A process followed across samples: its psutil object (CPU baseline) and its settled facts."""

    __slots__ = ("proc", "ppid", "sampled", "cmdline", "thread_names", "settled")

    def __init__(self, proc: psutil.Process, ppid: int) -> None:
        self.proc = proc
        self.ppid = ppid
        self.sampled = False
        self.cmdline: tuple[str, ...] | None = None
        self.thread_names: tuple[str, ...] | None = None
        self.settled = False


def _check_pid(pid: Any) -> int | None:
    if pid is None:
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise MonitorError(f"root pid {pid!r} is not a process id; give the training's pid as a positive whole number")
    return pid


def _last_created_pid() -> int | None:
    """The pid (or thread id) the kernel handed out last, from /proc/loadavg; None where unusable.

    Pids are handed out in increasing order until they wrap around, so every process born
    since the last look has a pid between the value then and the value now. That lets a
    sample read only the new processes instead of the stat file of every process on the
    machine (what a full walk, psutil's ``children(recursive=True)``, has to do).
    """
    try:
        with open("/proc/loadavg", "rb") as f:
            value = int(f.read().split()[4])
    except (OSError, ValueError, IndexError):
        return None
    return value if value > 0 else None  # some sandboxed kernels print 0: no shortcut there


class ProcessTreeSampler(BackgroundSampler[TreeSnapshot]):
    """Samples the process tree under ``root_pid``; :meth:`set_root` follows a restarted training.

    The first sample walks every process on the machine to find the tree; later samples
    only look at the processes born since the previous sample (see ``_last_created_pid``),
    and at the parents of processes whose parent ended. A full walk is still done every
    ``full_walk_every`` samples, as a safety net.
    """

    thread_name = "cachewatch-tree"

    def __init__(
        self,
        root_pid: int | None = None,
        *,
        interval_s: float = 1.0,
        history_len: int = DEFAULT_HISTORY_LEN,
        full_walk_every: int = 30,
    ) -> None:
        super().__init__(interval_s=interval_s, history_len=history_len)
        if isinstance(full_walk_every, bool) or not isinstance(full_walk_every, int) or full_walk_every < 1:
            raise MonitorError(f"full_walk_every {full_walk_every!r} must be a whole number of samples, at least 1")
        self._root_pid = _check_pid(root_pid)
        self._root: psutil.Process | None = None
        self._root_gone_reason: str | None = None
        self._tracked: dict[int, _Tracked] = {}
        self._seen_up_to_pid: int | None = None  # _last_created_pid() when the tree was last brought up to date
        self.full_walk_every = full_walk_every
        self._since_full_walk = 0
        self.full_walks = 0  # counters the benchmark and the tests read
        self.new_pids_read = 0

    @property
    def root_pid(self) -> int | None:
        return self._root_pid

    def set_root(self, pid: int | None) -> None:
        """Follow another root (a restarted training), or none; takes effect at the next sample."""
        pid = _check_pid(pid)
        with self._sample_lock:
            self._root_pid = pid
            self._root = None
            self._root_gone_reason = None
            self._tracked.clear()

    def pids(self) -> tuple[int, ...]:
        """Pids of the tree at the last sample (what the GPU sampler attributes memory to)."""
        snap = self.latest()
        return snap.pids if snap is not None else ()

    # --- finding the tree -----------------------------------------------------------------------

    def _root_process(self) -> psutil.Process | None:
        if self._root is None and self._root_gone_reason is None:
            try:
                self._root = psutil.Process(self._root_pid)
            except psutil.NoSuchProcess:
                self._root_gone_reason = f"training process {self._root_pid} does not exist"
            except psutil.AccessDenied:
                self._root_gone_reason = f"training process {self._root_pid} cannot be read (another user's process)"
        return self._root

    def _gone(self, now: float, vanished: set[int]) -> TreeSnapshot:
        self._root_gone_reason = f"training process {self._root_pid} has exited"
        self._root = None
        vanished.update(self._tracked)
        self._tracked.clear()
        return TreeSnapshot(now, self._root_pid, False, (), DETECT_NONE, tuple(sorted(vanished)), self._root_gone_reason)

    def _track(self, proc: psutil.Process, ppid: int | None = None) -> _Tracked | None:
        if ppid is None:
            try:
                ppid = proc.ppid()
            except psutil.NoSuchProcess:
                return None
            except psutil.AccessDenied:
                ppid = -1
        return _Tracked(proc, ppid)

    def _full_walk(self, root: psutil.Process) -> dict[int, _Tracked] | None:
        """Every descendant of ``root``, keeping the known psutil objects; None if the root is gone."""
        last_pid = _last_created_pid()  # before the walk: a process born during it is looked at next time
        try:
            children = root.children(recursive=True)  # also refuses a root whose pid was reused
        except psutil.NoSuchProcess:
            return None
        self.full_walks += 1
        self._since_full_walk = 0
        self._seen_up_to_pid = last_pid
        current: dict[int, _Tracked] = {}
        for proc in [root, *children]:
            known = self._tracked.get(proc.pid)
            if known is not None and known.proc == proc:  # same pid and start time: same process
                current[proc.pid] = known
            else:
                tracked = self._track(proc)
                if tracked is not None:
                    current[proc.pid] = tracked
        return current

    def _add_newborns(self, current: dict[int, _Tracked]) -> bool:
        """Add the processes born since the last look whose parent is in the tree; False if a full walk is needed."""
        last_pid = _last_created_pid()
        low = self._seen_up_to_pid
        if last_pid is None or low is None or last_pid < low:  # no figure, or pids wrapped around
            return False
        if last_pid == low:
            return True
        born = sorted(pid for pid in psutil.pids() if low < pid <= last_pid and pid not in current)
        # Ascending pids are birth order within the window, so a parent born in it comes before its children.
        for pid in born:
            try:
                proc = psutil.Process(pid)
                ppid = proc.ppid()
            except psutil.Error:  # gone already (most are: short-lived commands), or not ours to read
                continue
            self.new_pids_read += 1
            if ppid in current:
                current[pid] = _Tracked(proc, ppid)
        self._seen_up_to_pid = last_pid
        return True

    @staticmethod
    def _drop_orphans(current: dict[int, _Tracked], rows: dict[int, dict[str, Any]], root_pid: int) -> set[int]:
        """Remove processes whose parent ended and who were handed to a reaper outside the tree."""
        living = {pid for pid, r in rows.items() if r["status"] != psutil.STATUS_ZOMBIE}
        left: set[int] = set()
        changed = True
        while changed:
            changed = False
            for pid, tracked in list(current.items()):
                if pid == root_pid or pid in left or tracked.ppid in living - left:
                    continue
                try:
                    tracked.ppid = tracked.proc.ppid()  # the parent ended: who adopted it?
                except psutil.Error:
                    pass
                if tracked.ppid not in living - left:
                    left.add(pid)
                    changed = True
        for pid in left:
            current.pop(pid, None)
            rows.pop(pid, None)
        return left

    # --- one sample -----------------------------------------------------------------------------

    def _take(self) -> TreeSnapshot:
        now = time.time()
        if self._root_pid is None:
            return TreeSnapshot(now, None, False, (), DETECT_NONE, reason="no training process to watch")
        root = self._root_process()
        vanished: set[int] = set()
        if root is None:
            return self._gone(now, vanished) if self._tracked else TreeSnapshot(
                now, self._root_pid, False, (), DETECT_NONE, (), self._root_gone_reason)

        current = dict(self._tracked)
        self._since_full_walk += 1
        if not current or self._since_full_walk >= self.full_walk_every or not self._add_newborns(current):
            walked = self._full_walk(root)
            if walked is None:
                return self._gone(now, vanished)
            current = walked

        rows: dict[int, dict[str, Any]] = {}
        for pid, tracked in current.items():
            row = self._read(tracked, now)
            if row is None:
                vanished.add(pid)
            else:
                rows[pid] = row
        if root.pid not in rows or rows[root.pid]["status"] == psutil.STATUS_ZOMBIE:  # the root has ended
            self._tracked = {}
            vanished.update(current)
            return self._gone(now, vanished)
        for pid in vanished:
            current.pop(pid, None)
        vanished.update(self._drop_orphans(current, rows, root.pid))
        vanished.update(pid for pid in self._tracked if pid not in current)
        self._tracked = current

        worker_pids, detection = self._detect_workers(rows, now)
        workers = set(worker_pids)
        infos = []
        for pid in [root.pid, *sorted(p for p in rows if p != root.pid)]:
            row = rows[pid]
            role = ROLE_ROOT if pid == root.pid else ROLE_WORKER if pid in workers else ROLE_CHILD
            infos.append(ProcessInfo(ppid=current[pid].ppid, role=role, **row))
        return TreeSnapshot(now, self._root_pid, True, tuple(infos), detection, tuple(sorted(vanished)))

    @staticmethod
    def _read(tracked: _Tracked, now: float) -> dict[str, Any] | None:
        """One process's figures, or None if it is gone (vanished mid-walk is normal)."""
        proc = tracked.proc
        try:
            with proc.oneshot():  # one read of /proc/PID/stat for name, status and CPU times
                name = proc.name()
                status = proc.status()
                create_time = proc.create_time()
                if status == psutil.STATUS_ZOMBIE:
                    # Dead but not yet reaped by its parent: no CPU, no memory, not a worker.
                    return dict(pid=proc.pid, name=name, status=status, cpu_percent=None,
                                rss_bytes=None, create_time=create_time)
                try:
                    cpu = proc.cpu_percent(interval=None)
                    rss = proc.memory_info().rss
                except psutil.AccessDenied:
                    cpu, rss = None, None
        except psutil.NoSuchProcess:  # ZombieProcess included: it died between the listing and now
            return None
        except psutil.AccessDenied:  # a setuid child: it is there, its figures are not ours to read
            return dict(pid=proc.pid, name="?", status="unknown", cpu_percent=None, rss_bytes=None, create_time=0.0)
        first = not tracked.sampled
        tracked.sampled = True
        if not tracked.settled and now - create_time > _SETTLE_S:
            tracked.settled = True
            tracked.cmdline = None  # read once more, then keep
            tracked.thread_names = None
        return dict(pid=proc.pid, name=name, status=status, cpu_percent=None if first else cpu,
                    rss_bytes=rss, create_time=create_time)

    def _cmdline(self, pid: int) -> tuple[str, ...]:
        tracked = self._tracked.get(pid)
        if tracked is None:
            return ()
        if tracked.cmdline is None or not tracked.settled:
            try:
                tracked.cmdline = tuple(tracked.proc.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                tracked.cmdline = ()
        return tracked.cmdline

    def _thread_names(self, pid: int) -> tuple[str, ...]:
        tracked = self._tracked.get(pid)
        if tracked is None:
            return ()
        if tracked.thread_names is None or not tracked.settled:
            tracked.thread_names = read_thread_names(pid)
        return tracked.thread_names

    def _detect_workers(self, rows: dict[int, dict[str, Any]], now: float) -> tuple[tuple[int, ...], str]:
        root_pid = self._root_pid
        live = [dict(r, ppid=self._tracked[pid].ppid) for pid, r in rows.items()
                if pid != root_pid and r["status"] != psutil.STATUS_ZOMBIE]
        # Cheap rule first: process names are already read; command lines only if it finds nothing.
        if any(r["name"] == WORKER_PROCESS_NAME for r in live):
            candidates = [WorkerCandidate(r["pid"], r["name"], (), ()) for r in live]
        else:
            candidates = [
                WorkerCandidate(r["pid"], r["name"], self._cmdline(r["pid"]), self._cmdline(r["ppid"])) for r in live
            ]
        return find_workers(candidates, self._thread_names)
