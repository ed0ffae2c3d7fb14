"""The job interface: how verify, build and split run, report progress and stop.

A job is a small picklable object with a ``kind`` and a ``run(ctx)`` method that
returns a report (``ok``, ``summary()``, ``to_json()``). Everything it tells the
world goes through its :class:`JobContext`: progress (one frozen type,
:class:`JobProgress`: phase, items done/total, bytes, ETA, message; throttled),
messages, and the cancel token it must check between units of work. The same job runs

* in the foreground of a CLI command (:func:`run_job`, in a worker thread so that
  Ctrl-C becomes a clean cancel instead of an exception in the middle of a write), or
* under the engine's runner (``cachewatch.engine.daemon.jobrunner``, one thread per job,
  one job per kind), through :func:`execute`: in that thread, or, for a job whose
  ``isolation`` is ``"process"`` (split), in a child process (:mod:`.child`) so that an
  out-of-memory kill takes the job down and not the engine.

Cancelling never leaves damage: jobs only ever publish complete results (cache
entries through the cache's atomic put, split outputs through ``.part`` + rename) and
clean up their own partial files before :class:`JobCancelled` leaves ``run``; a job
killed in its child process is cleaned up after by its ``crash_cleanup``.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Protocol, Union

from ..errors import CachewatchError

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
    "JobFailed",
    "execute",
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


class JobFailed(CachewatchError):
    """A job that ran in a child process failed (or its process died); the message says why."""


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
    # "process": the engine runs it in a child process (a job that can use more memory than
    # the engine can afford to lose: split loads whole batch files).
    isolation: ClassVar[str] = "thread"

    def describe(self) -> str:
        return self.kind

    @abstractmethod
    def run(self, ctx: "JobContext") -> JobReport:
        """Do the work; check ``ctx.token`` often; raise :class:`JobCancelled` when cancelled."""

    def crash_cleanup(self) -> Callable[[int], None]:
        """Asked just before the job starts in a child process: what removes, given the child's pid,
        whatever the child left half done if it is killed (kill -9, the OOM killer)."""
        return lambda pid: None


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

    def forward(self, event: JobEvent) -> None:
        """Pass on an event a job reported elsewhere (in a child process), as if reported here."""
        if isinstance(event, JobProgress):
            self.last_progress = event
        self.emit(event)

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


def _mp_context() -> Any:
    # forkserver: never fork a multi-threaded parent (the engine) into a job or a job's worker.
    try:
        return multiprocessing.get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without forkserver
        return multiprocessing.get_context("spawn")


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


def execute(job: Job, ctx: JobContext) -> dict[str, Any]:
    """Run ``job`` for a runner and return its report as JSON (with ``summary``).

    In the calling thread, or in a child process when ``job.isolation == "process"``
    (see :mod:`.child`); either way progress and messages reach ``ctx`` and
    ``ctx.token`` cancels. Raises :class:`JobCancelled` when cancelled before a report,
    a :class:`CachewatchError` when the job fails (:class:`JobFailed` from a child, its
    death included).
    """
    if job.isolation == "process":
        from .child import run_in_child

        return run_in_child(job, ctx)
    report = job.run(ctx)
    out = report.to_json()
    out["summary"] = report.summary()
    return out
