"""The training's whole process tree, and trainings left behind by an engine that was killed.

Two leaks, one remedy: know every process that belongs to the training.

* A descendant that calls ``setsid()`` leaves the training's process group, so the
  supervisor's ``killpg`` on stop never reaches it. :class:`TreeKeeper` remembers every
  process the process monitor saw in the tree, walks the tree again at stop time, and finds
  processes that were re-parented away (a double-forked daemon) by a tag in their
  environment: the engine gives its training ``CACHEWATCH_RUN_ID=<random id>``, which every
  descendant inherits unless it clears its environment on purpose. What is still alive after
  the group was stopped gets SIGTERM, then SIGKILL after the grace period.
* An engine killed with ``kill -9`` cannot stop its training. The engine records the
  training in ``<state dir>/training.json`` (pid, process group, start time in clock ticks,
  run id); the next engine with that name reads it at start, finds the training still
  running (same pid *and* same start time, so a reused pid is not mistaken for it, or any
  process carrying the run id) and refuses to start a second one beside it.
  ``cachewatch stop NAME`` stops such an orphan.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import psutil  # type: ignore[import-untyped]  # no stubs installed; used through a few calls

__all__ = [
    "RUN_ID_ENV",
    "RECORD_NAME",
    "TreeKeeper",
    "Orphan",
    "end_processes",
    "find_orphan",
    "stop_orphan",
    "write_record",
    "remove_record",
    "start_ticks",
]

RUN_ID_ENV = "CACHEWATCH_RUN_ID"
RECORD_NAME = "training.json"


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None if
    gone or dead (a zombie nobody reaped yet: a killed engine whose parent is slow to reap).

    Together with the pid it names one process for the life of the machine: a pid reused by
    another process has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def tagged(run_id: str) -> list[psutil.Process]:
    """Processes whose environment carries ``CACHEWATCH_RUN_ID=run_id`` (the training's, wherever they went)."""
    me = os.getpid()
    needle = f"{RUN_ID_ENV}={run_id}".encode()
    out = []
    for pid in psutil.pids():
        if pid == me:
            continue
        try:  # read the raw file: psutil's environ() parses every variable of every process
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            try:
                out.append(psutil.Process(pid))
            except psutil.Error:
                pass
    return out


class TreeKeeper:
    """Every process that belonged to the training since the engine started it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        self._seen: dict[int, float] = {}  # pid -> create_time, as the process monitor saw them

    def note(self, processes: Iterable[Any]) -> None:
        """Remember the processes of a monitor tree snapshot (objects with pid and create_time)."""
        with self._lock:
            for p in processes:
                pid, ct = getattr(p, "pid", None), getattr(p, "create_time", None)
                if isinstance(pid, int) and pid > 0 and ct:
                    self._seen[pid] = float(ct)
            if len(self._seen) > 4096:  # a training forking short-lived helpers for days
                self._seen = {pid: ct for pid, ct in self._seen.items() if psutil.pid_exists(pid)}

    def members(self, leader_pid: int | None, *, scan: bool = True) -> list[psutil.Process]:
        """The training's live processes now: the leader's tree, those seen before, and the tagged ones."""
        found: dict[int, psutil.Process] = {}
        if leader_pid:
            try:
                leader = psutil.Process(leader_pid)
                for p in [leader, *leader.children(recursive=True)]:
                    found[p.pid] = p
            except psutil.Error:
                pass
        with self._lock:
            seen = dict(self._seen)
        for pid, ct in seen.items():
            if pid in found:
                continue
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - ct) < 0.05:  # not a reused pid
                    found[pid] = p
            except psutil.Error:
                pass
        if scan:
            for p in tagged(self.run_id):
                found.setdefault(p.pid, p)
        found.pop(os.getpid(), None)
        return [p for p in found.values() if _alive(p)]


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)  # psutil checks the process is still the one it was (pid reuse)
    except psutil.Error:
        pass


def end_processes(procs: Iterable[psutil.Process], grace_s: float) -> list[int]:
    """SIGTERM each live process (SIGCONT too: a stopped one keeps SIGTERM pending), SIGKILL
    what is left after ``grace_s``. Returns the pids that had to be ended."""
    procs = [p for p in procs if _alive(p)]
    for p in procs:
        _signal(p, signal.SIGTERM)
        _signal(p, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.02)
    for p in procs:
        if _alive(p):
            _signal(p, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.02)
    return [p.pid for p in procs]


# ----------------------------------------------------------------------- the state-dir record
def write_record(state_dir: Path, *, run_id: str, pid: int, command: Iterable[str], engine_name: str) -> None:
    """Say in the state directory which training this engine runs (atomically, mode 0600)."""
    try:
        pgid = os.getpgid(pid)
    except OSError:
        pgid = pid
    data = {
        "engine": engine_name,
        "engine_pid": os.getpid(),
        "engine_start_ticks": start_ticks(os.getpid()),
        "run_id": run_id,
        "pid": pid,
        "pgid": pgid,
        "start_ticks": start_ticks(pid),
        "started": time.time(),
        "command": list(command),
    }
    path = state_dir / RECORD_NAME
    tmp = state_dir / f".{RECORD_NAME}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a full disk loses the record (orphan detection then relies on nothing); never the engine


def remove_record(state_dir: Path, run_id: str) -> None:
    """Forget the record, if it is still this engine's (a later engine may have written its own)."""
    path = state_dir / RECORD_NAME
    rec = _read_record(path)
    if rec is not None and rec.get("run_id") == run_id:
        try:
            path.unlink()
        except OSError:
            pass


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Orphan:
    """A training (and its processes) whose engine is gone."""

    pid: int | None  # the recorded leader, when it still runs
    pgid: int | None
    command: tuple[str, ...]
    started: float
    engine_pid: int | None
    run_id: str
    pids: tuple[int, ...] = ()
    procs: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else f"pids {', '.join(map(str, self.pids[:5]))}"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started)) if self.started else "?"
        cmd = " ".join(" ".join(self.command).split())  # one line, whatever `python -c` code it holds
        if len(cmd) > 60:
            cmd = cmd[:57] + "..."
        return f"{who}, started {when}: {cmd}"


def _same_process(pid: Any, ticks: Any) -> bool:
    return isinstance(pid, int) and pid > 0 and ticks is not None and start_ticks(pid) == ticks


def find_orphan(state_dir: Path) -> Orphan | None:
    """The training an engine that is gone left running, from ``state_dir``'s record; None if none.

    A stale record (its training is over) is removed.
    """
    path = state_dir / RECORD_NAME
    rec = _read_record(path)
    if rec is None:
        return None
    if _same_process(rec.get("engine_pid"), rec.get("engine_start_ticks")) and rec.get("engine_pid") != os.getpid():
        return None  # its engine still runs (another name sharing this [run] log_dir): not an orphan
    run_id = str(rec.get("run_id") or "")
    procs: dict[int, psutil.Process] = {}
    pid = rec.get("pid")
    leader_alive = _same_process(pid, rec.get("start_ticks"))
    if leader_alive:
        try:
            leader = psutil.Process(pid)
            for p in [leader, *leader.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.Error:
            leader_alive = False
    if run_id:
        for p in tagged(run_id):
            procs.setdefault(p.pid, p)
    live = [p for p in procs.values() if _alive(p)]
    if not live:
        try:
            path.unlink()
        except OSError:
            pass
        return None
    pgid = rec.get("pgid")
    return Orphan(
        pid=pid if leader_alive else None,
        pgid=pgid if isinstance(pgid, int) and leader_alive else None,
        command=tuple(str(a) for a in rec.get("command") or ()),
        started=float(rec.get("started") or 0.0),
        engine_pid=rec.get("engine_pid") if isinstance(rec.get("engine_pid"), int) else None,
        run_id=run_id,
        pids=tuple(sorted(p.pid for p in live)),
        procs=tuple(live),
    )


def stop_orphan(state_dir: Path, orphan: Orphan, grace_s: float) -> list[int]:
    """Stop an orphaned training: its group and every process of its tree; then forget the record."""
    if orphan.pgid is not None:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.killpg(orphan.pgid, sig)
            except OSError:
                pass
    ended = end_processes(orphan.procs, grace_s)
    if orphan.pgid is not None:
        try:
            os.killpg(orphan.pgid, signal.SIGKILL)  # what the group forked meanwhile
        except OSError:
            pass
    remove_record(state_dir, orphan.run_id)
    return ended
