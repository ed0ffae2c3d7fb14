"""The job interface: how verify, build and split run, report progress and stop.

A job is a small picklable object with a ``kind`` and a ``run(ctx)`` method that
returns a report (``ok``, ``summary()``, ``to_json()``). Everything it tells the
world goes through its :class:`JobContext`: progress (throttled), messages, and the
cancel token it must check between units of work. The same job runs

* in the foreground of a CLI command (:func:`run_job`, in a worker thread so that
  Ctrl-C becomes a clean cancel instead of an exception in the middle of a write),
* in a daemon thread or a child process under :class:`JobRunner` (one job per kind
  at a time), or
* under another runner that only offers a ``threading.Event`` and a
  ``progress(done, total, message, unit)`` callback (see ``daemon_adapter``).

Cancelling never leaves damage: jobs only ever publish complete results (cache
entries through the cache's atomic put, split outputs through ``.part`` + rename) and
clean up their own partial files before :class:`JobCancelled` leaves ``run``.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Protocol, Union

from ..errors import CachewatchError
from ..events import EventLog

__all__ = [
    "Job",
    "JobReport",
    "JobContext",
    "CancelToken",
    "JobCancelled",
    "JobBusy",
    "JobStarted",
    "JobProgress",
    "JobMessage",
    "JobFinished",
    "JobEvent",
    "JobHandle",
    "JobRunner",
    "run_job",
    "event_from_json",
    "STATUS_OK",
    "STATUS_PROBLEMS",
    "STATUS_FAILED",
    "STATUS_CANCELLED",
]

log = logging.getLogger("cachewatch.jobs")

STATUS_OK = "ok"  # the job did everything and found nothing wrong
STATUS_PROBLEMS = "problems"  # the job ran to the end and found (or left) problems: verify faults, failed items
STATUS_FAILED = "failed"  # the job stopped on an error; the message says why
STATUS_CANCELLED = "cancelled"


class JobCancelled(CachewatchError):
    """Raised inside a job when its token is cancelled; whatever it had half done is already undone."""

    exit_code = 130


class JobBusy(CachewatchError):
    """A job of the same kind is already running here."""


class CancelToken:
    """A cancel flag a job checks between units of work.

    Wraps anything with ``is_set()`` and ``set()``: a ``threading.Event`` (thread runners,
    the daemon's own ``cancelled`` event) or a ``multiprocessing.Event`` (a job in a child
    process).
    """

    def __init__(self, event: Any = None) -> None:
        self._event = event if event is not None else threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return bool(self._event.is_set())

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled("cancelled; nothing half-done was left behind")

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``, waking early on cancel; True if cancelled."""
        return bool(self._event.wait(timeout_s))


# --------------------------------------------------------------------------------------- events
def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    kind: str
    description: str
    time_s: float = field(default_factory=_now)
    type: ClassVar[str] = "job.started"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class JobProgress:
    """Where a job stands. ``total`` is None while unknown; ``eta_s`` None until it can be estimated."""

    job_id: str
    kind: str
    phase: str
    done: int
    total: int | None
    unit: str = "items"
    bytes_done: int = 0
    bytes_total: int | None = None
    elapsed_s: float = 0.0
    rate_per_s: float | None = None  # in bytes/s when bytes_total is known, else in `unit`/s
    eta_s: float | None = None
    message: str = ""
    time_s: float = field(default_factory=_now)
    type: ClassVar[str] = "job.progress"

    @property
    def fraction(self) -> float | None:
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        if self.total:
            return min(1.0, self.done / self.total)
        return None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class JobMessage:
    """A line worth showing or logging: a warning, a failed item, a decision."""

    job_id: str
    kind: str
    level: str  # "info" | "warning" | "error"
    text: str
    time_s: float = field(default_factory=_now)
    type: ClassVar[str] = "job.message"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class JobFinished:
    job_id: str
    kind: str
    status: str  # STATUS_*
    summary: str
    elapsed_s: float
    report: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    time_s: float = field(default_factory=_now)
    type: ClassVar[str] = "job.finished"

    def __post_init__(self) -> None:
        object.__setattr__(self, "report", MappingProxyType(dict(self.report)))

    def to_json(self) -> dict[str, Any]:
        out = {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)}}
        out["report"] = dict(self.report)
        return out

    def __reduce__(self) -> Any:  # MappingProxyType cannot be pickled; results cross process boundaries
        return (_finished_from_state, (self.to_json(),))


def _finished_from_state(data: Mapping[str, Any]) -> JobFinished:
    return event_from_json(data)  # type: ignore[return-value]


JobEvent = Union[JobStarted, JobProgress, JobMessage, JobFinished]
_EVENT_TYPES: dict[str, type] = {c.type: c for c in (JobStarted, JobProgress, JobMessage, JobFinished)}


def event_from_json(data: Mapping[str, Any]) -> JobEvent:
    """The inverse of ``to_json()`` for any job event (unknown fields are ignored)."""
    cls = _EVENT_TYPES.get(str(data.get("type", "")))
    if cls is None:
        raise ValueError(f"not a job event: type {data.get('type')!r}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------- job + ctx
class JobReport(Protocol):
    """What a job returns."""

    @property
    def ok(self) -> bool: ...

    def summary(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


class Job(ABC):
    """A maintenance job. Subclasses are picklable dataclasses holding their options."""

    kind: ClassVar[str] = "job"

    def describe(self) -> str:
        return self.kind

    @abstractmethod
    def run(self, ctx: "JobContext") -> JobReport:
        """Do the work; check ``ctx.token`` often; raise :class:`JobCancelled` when cancelled."""


class JobContext:
    """What a running job uses to report and to learn that it should stop."""

    def __init__(
        self,
        job_id: str,
        kind: str,
        token: CancelToken | None = None,
        emit: Callable[[JobEvent], None] | None = None,
        *,
        min_interval_s: float = 0.25,
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.token = token or CancelToken()
        self._emit = emit
        self.min_interval_s = min_interval_s
        self.started = time.monotonic()
        self._phase = ""
        self._phase_started = self.started
        self._last_emit = 0.0
        self._lock = threading.Lock()
        self.last_progress: JobProgress | None = None

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def check(self) -> None:
        self.token.raise_if_cancelled()

    def emit(self, event: JobEvent) -> None:
        if self._emit is None:
            return
        try:
            self._emit(event)
        except Exception:  # a broken listener must not break the job
            log.debug("job event listener failed", exc_info=True)

    def progress(
        self,
        phase: str,
        done: int,
        total: int | None = None,
        *,
        unit: str = "items",
        bytes_done: int = 0,
        bytes_total: int | None = None,
        message: str = "",
        force: bool = False,
    ) -> None:
        """Report progress; emitted at most every ``min_interval_s`` unless the phase changed or ``force``."""
        now = time.monotonic()
        with self._lock:
            if phase != self._phase:
                self._phase, self._phase_started, force = phase, now, True
            if not force and now - self._last_emit < self.min_interval_s and not (total is not None and done >= total):
                return
            self._last_emit = now
            phase_elapsed = now - self._phase_started
        rate = eta = None
        if phase_elapsed > 0.5:
            if bytes_total:
                rate = bytes_done / phase_elapsed
                eta = (bytes_total - bytes_done) / rate if rate > 0 else None
            elif total is not None:
                rate = done / phase_elapsed
                eta = (total - done) / rate if rate > 0 else None
        p = JobProgress(
            job_id=self.job_id,
            kind=self.kind,
            phase=phase,
            done=done,
            total=total,
            unit=unit,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            elapsed_s=now - self.started,
            rate_per_s=rate,
            eta_s=None if eta is None else max(0.0, eta),
            message=message,
        )
        self.last_progress = p
        self.emit(p)

    def message(self, text: str, level: str = "info") -> None:
        self.emit(JobMessage(self.job_id, self.kind, level, text))

    def warn(self, text: str) -> None:
        self.message(text, "warning")


# -------------------------------------------------------------------------------------- running
_ids = itertools.count(1)


def _new_id(kind: str) -> str:
    return f"{kind}-{os.getpid()}-{next(_ids)}"


def _execute(job: Job, ctx: JobContext) -> tuple[JobFinished, JobReport | None, BaseException | None]:
    """Run one job to its end and say how it ended. Never raises (except KeyboardInterrupt/SystemExit)."""
    t0 = time.monotonic()
    ctx.emit(JobStarted(ctx.job_id, job.kind, job.describe()))
    report: JobReport | None = None
    error: BaseException | None = None
    try:
        report = job.run(ctx)
        status = STATUS_OK if report.ok else STATUS_PROBLEMS
        if ctx.cancelled and not report.ok:
            status = STATUS_CANCELLED
        summary, err_text = report.summary(), None
    except JobCancelled as exc:
        error, status, summary, err_text = exc, STATUS_CANCELLED, "cancelled", str(exc)
        report = getattr(exc, "report", None)
    except CachewatchError as exc:
        error, status, summary, err_text = exc, STATUS_FAILED, str(exc), str(exc)
    except Exception as exc:  # a job bug must not take the daemon down; the traceback goes to the log
        log.error("job %s crashed:\n%s", ctx.job_id, traceback.format_exc())
        error, status, err_text = exc, STATUS_FAILED, f"{type(exc).__name__}: {exc}"
        summary = err_text
    finished = JobFinished(
        job_id=ctx.job_id,
        kind=job.kind,
        status=status,
        summary=summary,
        elapsed_s=time.monotonic() - t0,
        report=report.to_json() if report is not None else {},
        error=err_text,
    )
    ctx.emit(finished)
    return finished, report, error


class JobHandle:
    """A started job: wait for it, cancel it, read its last progress."""

    def __init__(self, job: Job, job_id: str, token: CancelToken, isolation: str) -> None:
        self.job = job
        self.job_id = job_id
        self.kind = job.kind
        self.token = token
        self.isolation = isolation
        self.last_progress: JobProgress | None = None
        self.result: JobFinished | None = None
        self.report: JobReport | None = None  # the report object itself (thread isolation only)
        self.exception: BaseException | None = None  # what stopped a failed job (thread isolation only)
        self._done = threading.Event()
        self.process: multiprocessing.process.BaseProcess | None = None

    def cancel(self) -> None:
        self.token.cancel()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> JobFinished | None:
        self._done.wait(timeout_s)
        return self.result


class JobRunner:
    """Runs jobs in threads or child processes, one at a time per kind.

    ``on_event`` receives every :data:`JobEvent` (from the job's thread, or from this
    runner's pump thread for process isolation). With ``event_log`` the start and end of
    each job, and its warnings, are also appended there as ``job.*`` events.

    ``isolation="process"`` runs the job in a fresh ``forkserver`` child: a job that dies
    (an out-of-memory kill while splitting a huge pickle) cannot take the runner's process
    with it; the runner reports it as failed with the exit status.
    """

    def __init__(
        self,
        on_event: Callable[[JobEvent], None] | None = None,
        *,
        isolation: str = "thread",
        event_log: EventLog | None = None,
    ) -> None:
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation = {isolation!r}; use 'thread' or 'process'")
        self.on_event = on_event
        self.isolation = isolation
        self.event_log = event_log
        self._lock = threading.Lock()
        self._running: dict[str, JobHandle] = {}  # kind -> handle
        self._handles: dict[str, JobHandle] = {}

    def _dispatch(self, handle: JobHandle, event: JobEvent) -> None:
        if isinstance(event, JobProgress):
            handle.last_progress = event
        if self.event_log is not None and not isinstance(event, JobProgress):
            if not (isinstance(event, JobMessage) and event.level == "info"):
                data = event.to_json()
                kind = data.pop("type")
                data.pop("time_s", None)
                try:
                    self.event_log.append(kind, **data)
                except OSError:
                    log.debug("cannot write job event", exc_info=True)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.debug("job event listener failed", exc_info=True)

    def start(self, job: Job, *, isolation: str | None = None) -> JobHandle:
        """Start ``job``; :class:`JobBusy` if a job of its kind is already running here."""
        isolation = isolation or self.isolation
        with self._lock:
            busy = self._running.get(job.kind)
            if busy is not None and not busy.done:
                raise JobBusy(
                    f"a {job.kind} job is already running ({busy.job_id}); wait for it to finish or cancel it first"
                )
            job_id = _new_id(job.kind)
            if isolation == "process":
                ctx_mp = _mp_context()
                token = CancelToken(ctx_mp.Event())
            else:
                ctx_mp = None
                token = CancelToken()
            handle = JobHandle(job, job_id, token, isolation)
            self._running[job.kind] = handle
            self._handles[job_id] = handle
        if isolation == "process":
            self._start_process(handle, ctx_mp)
        else:
            threading.Thread(target=self._thread_main, args=(handle,), name=f"job-{job_id}", daemon=True).start()
        return handle

    def _finish(self, handle: JobHandle, finished: JobFinished) -> None:
        handle.result = finished
        with self._lock:
            if self._running.get(handle.kind) is handle:
                del self._running[handle.kind]
        handle._done.set()

    def _thread_main(self, handle: JobHandle) -> None:
        ctx = JobContext(handle.job_id, handle.kind, handle.token, lambda e: self._dispatch(handle, e))
        finished: JobFinished | None = None
        try:
            finished, handle.report, handle.exception = _execute(handle.job, ctx)
        except BaseException as exc:  # KeyboardInterrupt/SystemExit in a job thread: report, never hang waiters
            handle.exception = exc
            finished = JobFinished(handle.job_id, handle.kind, STATUS_FAILED, str(exc), 0.0, error=repr(exc))
        finally:
            if finished is None:
                finished = JobFinished(handle.job_id, handle.kind, STATUS_FAILED, "job thread died", 0.0)
            self._finish(handle, finished)

    def _start_process(self, handle: JobHandle, ctx_mp: Any) -> None:
        events: Any = ctx_mp.SimpleQueue()
        proc = ctx_mp.Process(
            target=_process_main,
            args=(handle.job, handle.job_id, handle.token._event, events),
            name=f"cachewatch-job-{handle.job_id}",
            daemon=False,
        )
        proc.start()
        handle.process = proc
        threading.Thread(target=self._pump, args=(handle, proc, events), name=f"job-pump-{handle.job_id}", daemon=True).start()

    def _pump(self, handle: JobHandle, proc: Any, events: Any) -> None:
        finished: JobFinished | None = None
        reader = _QueueReader(events)
        try:
            while finished is None:
                item = reader.get(0.2)
                if item is None and not proc.is_alive():
                    item = reader.get(0.5)  # the last events may still be in the pipe
                    if item is None:
                        break
                if item is None:
                    continue
                try:
                    event = event_from_json(item)
                except (TypeError, ValueError):
                    log.debug("unreadable job event %r", item)
                    continue
                self._dispatch(handle, event)
                if isinstance(event, JobFinished):
                    finished = event
        finally:
            if finished is None:
                proc.join(5.0)
                code = proc.exitcode
                why = (
                    f"killed by signal {-code}" + (" (probably out of memory)" if code == -9 else "")
                    if code is not None and code < 0
                    else f"exited with status {code}"
                )
                finished = JobFinished(
                    handle.job_id, handle.kind, STATUS_FAILED, f"job process {why}", 0.0, error=f"job process {why}"
                )
                self._dispatch(handle, finished)
            proc.join(5.0)
            self._finish(handle, finished)

    def get(self, job_id: str) -> JobHandle | None:
        with self._lock:
            return self._handles.get(job_id)

    def running(self) -> list[JobHandle]:
        with self._lock:
            return [h for h in self._running.values() if not h.done]

    def cancel(self, job_id: str) -> bool:
        handle = self.get(job_id)
        if handle is None or handle.done:
            return False
        handle.cancel()
        return True

    def shutdown(self, *, cancel: bool = True, timeout_s: float | None = 30.0) -> None:
        handles = self.running()
        if cancel:
            for h in handles:
                h.cancel()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for h in handles:
            h.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))


def _mp_context() -> Any:
    # forkserver: never fork a multi-threaded parent (the daemon) into a job.
    try:
        return multiprocessing.get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without forkserver
        return multiprocessing.get_context("spawn")


class _QueueReader:
    """A SimpleQueue read with a timeout (SimpleQueue has none; its reader pipe can be polled)."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def get(self, timeout_s: float) -> Any:
        if self.q._reader.poll(timeout_s):
            try:
                return self.q.get()
            except (EOFError, OSError):
                return None
        return None


def _process_main(job: Job, job_id: str, cancel_event: Any, events: Any) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to cancel

    def emit(event: JobEvent) -> None:
        events.put(event.to_json())

    ctx = JobContext(job_id, job.kind, CancelToken(cancel_event), emit)
    _execute(job, ctx)


def run_job(
    job: Job,
    *,
    on_event: Callable[[JobEvent], None] | None = None,
    token: CancelToken | None = None,
    poll_s: float = 0.2,
) -> tuple[JobFinished, JobReport | None]:
    """Run ``job`` now and wait for it, in a worker thread so that Ctrl-C cancels it cleanly.

    On KeyboardInterrupt the job is cancelled, waited for (it undoes what it had half
    done), and KeyboardInterrupt is raised again. A job that failed on a
    :class:`CachewatchError` re-raises it here, so the CLI prints its one-line message.
    """
    handle_token = token or CancelToken()
    result: dict[str, Any] = {}
    ctx = JobContext(_new_id(job.kind), job.kind, handle_token, on_event)

    done = threading.Event()

    def target() -> None:
        try:
            result["out"] = _execute(job, ctx)
        except BaseException as exc:  # pragma: no cover - only KeyboardInterrupt/SystemExit reach here
            result["exc"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"job-{ctx.job_id}", daemon=True)
    thread.start()
    interrupted = False
    # Wait on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the
    # thread looking finished while it still runs.
    while not done.is_set():
        try:
            done.wait(poll_s)
        except KeyboardInterrupt:
            if interrupted:
                continue  # keep waiting: stopping mid-write is what we are avoiding
            interrupted = True
            handle_token.cancel()
            ctx.message("interrupted: cancelling, waiting for work in flight to finish or roll back", "warning")
    if "exc" in result:
        raise result["exc"]
    finished, report, error = result["out"]
    if interrupted:
        raise KeyboardInterrupt
    if finished.status == STATUS_FAILED and isinstance(error, CachewatchError):
        raise error
    if finished.status == STATUS_FAILED and error is not None:
        raise error
    return finished, report
