"""Which processes of the training's tree are data-loading workers.

Rules, first match wins, and the snapshot says which one matched:

1. ``process_name``: torch names each DataLoader worker ``pt_data_worker``
   (``torch.multiprocessing._set_thread_name`` in the worker loop). On Linux this names
   the worker's main thread, which *is* the process name (``/proc/PID/comm``), for fork,
   spawn and forkserver workers alike (checked with torch 2.13).
2. ``thread_name``: some thread of the process is called ``pt_data_worker`` while the
   process itself was renamed later (``setproctitle`` in a ``worker_init_fn``).
3. ``cmdline``: workers of ``multiprocessing`` without torch's name: spawn children
   run ``multiprocessing.spawn``; fork children, and the children the fork server
   forks, keep their parent's command line exactly. The resource tracker and the fork
   server themselves are helpers, not workers.
4. ``python_children``: any other Python process under the training.

No match gives ``none`` and a count of 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

__all__ = [
    "WORKER_PROCESS_NAME",
    "DETECT_PROCESS_NAME",
    "DETECT_THREAD_NAME",
    "DETECT_CMDLINE",
    "DETECT_PYTHON_CHILDREN",
    "DETECT_NONE",
    "WorkerCandidate",
    "find_workers",
    "read_thread_names",
]

WORKER_PROCESS_NAME = "pt_data_worker"

DETECT_PROCESS_NAME = "process_name"
DETECT_THREAD_NAME = "thread_name"
DETECT_CMDLINE = "cmdline"
DETECT_PYTHON_CHILDREN = "python_children"
DETECT_NONE = "none"

_MP_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver", "multiprocessing.semaphore_tracker")
_MP_SPAWNED = ("multiprocessing.spawn", "spawn_main")


@dataclass(frozen=True)
class WorkerCandidate:
    """What the rules need to know of one live descendant of the training's root process."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    parent_cmdline: tuple[str, ...]


def _is_python(c: WorkerCandidate) -> bool:
    exe = os.path.basename(c.cmdline[0]) if c.cmdline else ""
    return c.name.startswith("python") or exe.startswith("python")


def _is_mp_helper(c: WorkerCandidate) -> bool:
    # The fork server's own children share its command line: they are the workers it forked, not helpers.
    joined = " ".join(c.cmdline)
    return any(marker in joined for marker in _MP_HELPERS) and c.cmdline != c.parent_cmdline


def _is_mp_child(c: WorkerCandidate) -> bool:
    if not c.cmdline or _is_mp_helper(c):
        return False
    joined = " ".join(c.cmdline)
    if any(marker in joined for marker in _MP_SPAWNED):
        return True
    return _is_python(c) and c.cmdline == c.parent_cmdline


def find_workers(
    candidates: Sequence[WorkerCandidate],
    thread_names: Callable[[int], Iterable[str]],
) -> tuple[tuple[int, ...], str]:
    """Return (worker pids, rule name). ``thread_names(pid)`` is called only when rule 1 finds nothing."""
    named = [c.pid for c in candidates if c.name == WORKER_PROCESS_NAME]
    if named:
        return tuple(sorted(named)), DETECT_PROCESS_NAME
    pythons = [c for c in candidates if _is_python(c) and not _is_mp_helper(c)]
    threaded = [c.pid for c in pythons if WORKER_PROCESS_NAME in set(thread_names(c.pid))]
    if threaded:
        return tuple(sorted(threaded)), DETECT_THREAD_NAME
    mp = [c.pid for c in candidates if _is_mp_child(c)]
    if mp:
        return tuple(sorted(mp)), DETECT_CMDLINE
    if pythons:
        return tuple(sorted(c.pid for c in pythons)), DETECT_PYTHON_CHILDREN
    return (), DETECT_NONE


def read_thread_names(pid: int) -> tuple[str, ...]:
    """Names of the threads of ``pid`` (``/proc/PID/task/TID/comm``); empty when the process is gone.

    psutil lists threads but not their names, hence the direct read.
    """
    names: list[str] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return ()
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", "rb") as f:
                names.append(f.read().decode("utf-8", "replace").rstrip("\n"))
        except OSError:  # the thread ended between the listing and the read
            continue
    return tuple(names)
