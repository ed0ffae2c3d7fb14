"""Runs the engine's maintenance jobs (verify, build, split): one thread each, one job per kind, cancellable.

The one job runner. A job is a function of a :class:`~cachewatch.engine.jobs.base.JobContext`
(the same context a job gets from the command line): it reports through ``ctx.progress``
(phase, items done/total, bytes, ETA, message) and ``ctx.warn``, and checks ``ctx.token``.
:meth:`JobRunner.start_job` runs a :class:`~cachewatch.engine.jobs.base.Job` through
:func:`~cachewatch.engine.jobs.base.execute`, which puts a job with ``isolation =
"process"`` (split) in a child process, so that a kill -9 or an OOM kill of the job fails
the job and leaves the engine running.

The runner turns progress into :class:`JobView` values for snapshots (every update) and
``job.*`` events for the event log (progress at most once a second, so a fast job does
not flood the log).
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..errors import CachewatchError
from ..jobs.base import CancelToken, Job, JobContext, JobEvent, JobMessage, JobProgress, execute
from .codec import frozen_map
from .snapshot import JobView

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)
_KEEP_FINISHED = 20
_PROGRESS_EVENT_EVERY_S = 1.0

JobListener = Callable[[str, JobView], None]  # (event kind, or "" for a snapshot-only change; view)
JobFunction = Callable[[JobContext], Mapping[str, Any] | None]


class JobRunner:
    def __init__(self, on_change: JobListener) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._views: dict[str, JobView] = {}
        self._running: dict[str, tuple[JobContext, threading.Thread]] = {}
        self._last_event: dict[str, float] = {}
        self._ids = itertools.count(1)

    def start(self, kind: str, fn: JobFunction) -> JobView:
        """Run ``fn(ctx)`` in a thread; its result mapping becomes the view's ``result``."""
        with self._lock:
            busy = [v for v in self._views.values() if v.state == "running" and v.kind == kind]
            if busy:
                raise CachewatchError(f"a {kind} job is already running ({busy[0].id}); wait for it or cancel it")
            view = JobView(id=f"{kind}-{next(self._ids)}", kind=kind, state="running", started=time.time())
            self._views[view.id] = view
            ctx = JobContext(view.id, kind, CancelToken(), functools.partial(self._on_event, view.id))
            thread = threading.Thread(target=self._run, args=(ctx, fn), name=f"job-{view.id}", daemon=True)
            self._running[view.id] = (ctx, thread)
        self._on_change("job.started", view)
        thread.start()
        return view

    def start_job(self, job: Job) -> JobView:
        """Run ``job`` (in a child process if its isolation says so); see :func:`execute`."""
        return self.start(job.kind, lambda ctx: execute(job, ctx))

    def cancel(self, job_id: str) -> JobView:
        """Ask a running job to stop (it undoes what it had half done); the view of a finished one as is."""
        with self._lock:
            entry = self._running.get(job_id)
            if entry is None:
                view = self._views.get(job_id)
                if view is None:
                    raise KeyError(job_id)
                return view
            entry[0].token.cancel()
            return self._views[job_id]

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobView:
        """The job's view once it has finished (or as it stands after ``timeout_s``)."""
        with self._lock:
            entry = self._running.get(job_id)
        if entry is not None:
            entry[1].join(timeout_s)
        with self._lock:
            return self._views[job_id]

    def jobs(self) -> tuple[JobView, ...]:
        with self._lock:
            views = list(self._views.values())
        running = [v for v in views if v.state == "running"]
        done = sorted((v for v in views if v.state != "running"), key=lambda v: v.ended or 0, reverse=True)
        return tuple(running + done)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            entries = list(self._running.values())
        for ctx, _ in entries:
            ctx.token.cancel()
        deadline = time.monotonic() + timeout_s
        for _, thread in entries:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------------------- internals
    def _on_event(self, job_id: str, event: JobEvent) -> None:
        if isinstance(event, JobProgress):
            changes: dict[str, Any] = dict(
                phase=event.phase, done=event.done, total=event.total, unit=event.unit,
                bytes_done=event.bytes_done, bytes_total=event.bytes_total, eta_s=event.eta_s,
            )
            if event.message:
                changes["message"] = event.message
            now = time.monotonic()
            emit = now - self._last_event.get(job_id, 0.0) >= _PROGRESS_EVENT_EVERY_S
            if emit:
                self._last_event[job_id] = now
            self._update(job_id, "job.progress" if emit else "", changes)
        elif isinstance(event, JobMessage) and event.level != "info":
            # A warning or a failed item: shown in the job's line and always logged.
            self._update(job_id, "job.progress", {"message": f"{event.level}: {event.text}"})

    def _update(self, job_id: str, kind: str, changes: dict[str, Any]) -> None:
        with self._lock:
            view = self._views.get(job_id)
            if view is None or view.state != "running":
                return
            view = replace(view, **changes)
            self._views[job_id] = view
        self._on_change(kind, view)

    def _run(self, ctx: JobContext, fn: JobFunction) -> None:
        state, error, result = "done", None, None
        try:
            result = fn(ctx)
            # A cancel that came after the work was complete (a job in a child process hears of
            # it a moment later) does not make a finished job "cancelled".
            if ctx.cancelled and not (result or {}).get("ok"):
                state = "cancelled"
        except CachewatchError as exc:
            state, error = ("cancelled" if ctx.cancelled else "failed"), str(exc)
        except Exception as exc:  # the engine outlives a broken job; the error goes to the client
            log.exception("job %s crashed", ctx.job_id)
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            view = replace(self._views[ctx.job_id], state=state, ended=time.time(), error=error,
                           result=frozen_map(result or {}))
            self._views[ctx.job_id] = view
            self._running.pop(ctx.job_id, None)
            self._last_event.pop(ctx.job_id, None)
            finished = [v for v in self._views.values() if v.state != "running"]
            for old in sorted(finished, key=lambda v: v.ended or 0)[:-_KEEP_FINISHED]:
                self._views.pop(old.id, None)
        self._on_change("job.finished", view)
