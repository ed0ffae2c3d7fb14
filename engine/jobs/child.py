"""A job in a child process: an out-of-memory kill takes the job down, not the engine.

Split loads whole batch files; a file bigger than memory gets the process killed by the
kernel. In the engine's process that would end the engine, its socket and the
supervision of the training, so the engine runs such jobs (``isolation = "process"``)
here: a fresh ``forkserver`` child (never a fork of the multi-threaded engine) runs the
job with its own :class:`JobContext`, whose events come back over a pipe and are passed
on to the runner's context unchanged (phase, items, bytes, ETA, message). Cancel is a
shared event. If the child dies without a result (``kill -9``, the OOM killer), the job
fails with the signal in its message and the job's ``crash_cleanup`` removes what the
child had half written. If the engine dies instead, the child notices and cancels
itself, so it cleans up rather than running on unseen.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from .base import (
    STATUS_CANCELLED,
    STATUS_FAILED,
    CancelToken,
    Job,
    JobCancelled,
    JobContext,
    JobEvent,
    JobFailed,
    JobFinished,
    JobMessage,
    JobProgress,
    _execute,
    _mp_context,
    event_from_json,
)

__all__ = ["run_in_child"]

_PARENT_CHECK_S = 1.0


def _why(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-exitcode} ({name})" + (", probably out of memory" if exitcode == -9 else "")
    return f"exited with status {exitcode} without a result"


def run_in_child(job: Job, ctx: JobContext, *, poll_s: float = 0.2) -> dict[str, Any]:
    """Run ``job`` in a child process; see the module docstring. Returns the report JSON with ``summary``."""
    mp = _mp_context()
    cancel = mp.Event()
    reader, writer = mp.Pipe(duplex=False)
    cleanup = job.crash_cleanup()
    proc = mp.Process(target=_child_main, args=(job, ctx.job_id, cancel, writer), name=f"cachewatch-{ctx.job_id}",
                      daemon=True)
    proc.start()
    writer.close()  # the child holds the only writer: its death reads as end of file here
    finished: JobFinished | None = None
    try:
        while finished is None:
            if ctx.cancelled and not cancel.is_set():
                cancel.set()
            try:
                if not reader.poll(poll_s):
                    if not proc.is_alive() and not reader.poll(0.5):
                        break
                    continue
                data = reader.recv()
            except (EOFError, OSError):
                break
            event = event_from_json(data)
            if isinstance(event, JobFinished):
                finished = event
            elif isinstance(event, (JobProgress, JobMessage)):
                ctx.forward(event)
    finally:
        if finished is None and ctx.cancelled:
            cancel.set()
        proc.join(30.0 if finished is not None else 5.0)
        if proc.is_alive():  # pragma: no cover - a child that hangs after its result
            proc.kill()
            proc.join(5.0)
        reader.close()
    if finished is None:
        cleanup(proc.pid or 0)
        raise JobFailed(f"the {job.kind} process (pid {proc.pid}) {_why(proc.exitcode)}; "
                        f"what it had half written was removed, its inputs are as they were")
    if finished.status == STATUS_FAILED:
        raise JobFailed(finished.error or finished.summary)
    if finished.status == STATUS_CANCELLED and not finished.report:
        raise JobCancelled(finished.error or "cancelled; nothing half-done was left behind")
    out = dict(finished.report)
    out["summary"] = finished.summary
    return out


def _child_main(job: Job, job_id: str, cancel: Any, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the engine's terminal is the engine's to handle
    send_lock = threading.Lock()
    parent = os.getppid()

    def emit(event: JobEvent) -> None:
        with send_lock:  # split reports from its worker threads
            conn.send(event.to_json())

    def watch_parent() -> None:
        # The forkserver (our parent) exits with the engine: then cancel, so the job cleans up.
        while not cancel.wait(_PARENT_CHECK_S):
            if os.getppid() != parent:
                cancel.set()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    _execute(job, JobContext(job_id, job.kind, CancelToken(cancel), emit))
    conn.close()
