"""Runs maintenance jobs (verify, build, split) for the engine: one thread each, cancellable.

A job is a function of a :class:`JobContext`; it calls ``ctx.progress(...)`` as it goes
and checks ``ctx.cancelled``. The runner turns that into :class:`JobView` values for
snapshots and ``job.*`` events for the event log (progress events at most once a second,
so a fast job does not flood the log).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..errors import CachewatchError
from .codec import frozen_map
from .snapshot import JobView

__all__ = ["JobRunner", "RunningJob"]

log = logging.getLogger(__name__)
_KEEP_FINISHED = 20
_PROGRESS_EVENT_EVERY_S = 1.0

JobListener = Callable[[str, JobView], None]  # (event kind, view)


class RunningJob:
    """The :class:`~cachewatch.engine.daemon.parts.JobContext` a job function receives."""

    def __init__(self, runner: "JobRunner", view: JobView) -> None:
        self._runner = runner
        self.id = view.id
        self.cancelled = threading.Event()
        self._last_event = 0.0

    def progress(self, done: int, total: int | None = None, message: str = "", unit: str = "") -> None:
        now = time.monotonic()
        emit = now - self._last_event >= _PROGRESS_EVENT_EVERY_S
        if emit:
            self._last_event = now
        self._runner._update(self.id, emit, done=done, total=total, message=message, unit=unit)


class JobRunner:
    def __init__(self, on_change: JobListener) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._views: dict[str, JobView] = {}
        self._running: dict[str, tuple[RunningJob, threading.Thread]] = {}
        self._ids = itertools.count(1)

    def start(self, kind: str, fn: Callable[[RunningJob], Mapping[str, Any] | None]) -> JobView:
        with self._lock:
            busy = [v for v in self._views.values() if v.state == "running" and v.kind == kind]
            if busy:
                raise CachewatchError(f"a {kind} job is already running ({busy[0].id}); wait for it or cancel it")
            view = JobView(id=f"{kind}-{next(self._ids)}", kind=kind, state="running", started=time.time())
            self._views[view.id] = view
            job = RunningJob(self, view)
            thread = threading.Thread(target=self._run, args=(job, fn), name=f"job-{view.id}", daemon=True)
            self._running[view.id] = (job, thread)
        self._on_change("job.started", view)
        thread.start()
        return view

    def cancel(self, job_id: str) -> JobView:
        with self._lock:
            entry = self._running.get(job_id)
            if entry is None:
                view = self._views.get(job_id)
                if view is None:
                    raise KeyError(job_id)
                return view
            entry[0].cancelled.set()
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
        for job, _ in entries:
            job.cancelled.set()
        deadline = time.monotonic() + timeout_s
        for _, thread in entries:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _update(self, job_id: str, emit: bool, **changes: Any) -> None:
        with self._lock:
            view = self._views.get(job_id)
            if view is None:
                return
            changes = {k: v for k, v in changes.items() if v is not None and v != ""}
            view = replace(view, **changes)
            self._views[job_id] = view
        self._on_change("job.progress" if emit else "", view)

    def _run(self, job: RunningJob, fn: Callable[[RunningJob], Mapping[str, Any] | None]) -> None:
        state, error, result = "done", None, None
        try:
            result = fn(job)
            if job.cancelled.is_set():
                state = "cancelled"
        except CachewatchError as exc:
            state, error = ("cancelled" if job.cancelled.is_set() else "failed"), str(exc)
        except Exception as exc:  # the engine outlives a broken job; the error goes to the client
            log.exception("job %s crashed", job.id)
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            view = replace(self._views[job.id], state=state, ended=time.time(), error=error,
                           result=frozen_map(result or {}))
            self._views[job.id] = view
            self._running.pop(job.id, None)
            finished = [v for v in self._views.values() if v.state != "running"]
            for old in sorted(finished, key=lambda v: v.ended or 0)[:-_KEEP_FINISHED]:
                self._views.pop(old.id, None)
        self._on_change("job.finished", view)
