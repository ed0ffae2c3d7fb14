"""One object for the supervisor: the training's output and progress file in, snapshots and alerts out.

The supervisor owns the process and the pipes; it hands every output chunk to
:meth:`ProgressFeed.feed_output`, calls :meth:`ProgressFeed.poll` on its sampling tick,
and :meth:`ProgressFeed.finish` when the process has exited. Alerts (CUDA and host
OOM) come back from those calls so they can become events; the progress itself is
read with :meth:`ProgressFeed.snapshot`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from .oom import CudaOomAlert, HostOomAlert
from .parsers import OutputParser, ParsedProgress
from .progress import ProgressSnapshot, ProgressTracker
from .records import ReportReader, ReportRecord
from .report import ENV_VAR

__all__ = ["ProgressFeed", "Alert"]

Alert = CudaOomAlert | HostOomAlert


class ProgressFeed:
    """Progress of one training run (one attempt: make a new feed when the supervisor restarts it).

    ``progress_file`` is the file the supervisor names in ``CACHEWATCH_PROGRESS_FILE``
    (:meth:`environment` gives the variable). Thread-safe.
    """

    def __init__(self, progress_file: str | os.PathLike | None = None, *, started_time: float | None = None) -> None:
        self.progress_file = Path(progress_file) if progress_file is not None else None
        self.tracker = ProgressTracker(started_time=started_time)
        self._reader = ReportReader(self.progress_file) if self.progress_file is not None else None
        self._parser = OutputParser()
        self._lock = threading.Lock()
        self.alerts: list[Alert] = []
        self.last_cuda_oom: CudaOomAlert | None = None

    def environment(self) -> dict[str, str]:
        """What to add to the training's environment so :mod:`report` writes to this feed."""
        return {ENV_VAR: str(self.progress_file)} if self.progress_file is not None else {}

    def feed_output(self, chunk: bytes | str, time_s: float | None = None) -> list[Alert]:
        """A chunk of the training's output (stdout and stderr alike); returns new alerts."""
        t = time.time() if time_s is None else time_s
        with self._lock:
            return self._take(self._parser.feed(chunk), t)

    def poll(self, time_s: float | None = None) -> list[ReportRecord]:
        """Read what the script appended to the progress file; returns the new records
        (``kind == "event"`` ones are the script's own events, for the event stream)."""
        if self._reader is None:
            return []
        with self._lock:
            records = self._reader.read_new()
        for rec in records:
            self.tracker.add_record(rec)
        return records

    def finish(self, time_s: float | None = None, outcome: str = "exited") -> list[Alert]:
        """The process exited: the last unterminated line and any open OOM message count now.

        ``outcome`` (``finished``, ``stopped``, ``failed``) is what snapshots show from now on
        in place of an ETA, with the run's total time.
        """
        t = time.time() if time_s is None else time_s
        self.poll(t)
        with self._lock:
            alerts = self._take(self._parser.flush(), t)
        self.tracker.end(t, outcome)
        return alerts

    def pause(self, time_s: float | None = None) -> None:
        """The supervisor paused the training: paused time is not training time."""
        self.tracker.pause(time.time() if time_s is None else time_s)

    def resume(self, time_s: float | None = None) -> None:
        self.tracker.resume(time.time() if time_s is None else time_s)

    def snapshot(self, now: float | None = None) -> ProgressSnapshot:
        return self.tracker.snapshot(now)

    def _take(self, observations: list, t: float) -> list[Alert]:
        alerts: list[Alert] = []
        for obs in observations:
            if isinstance(obs, ParsedProgress):
                self.tracker.add_parsed(obs, t)
            else:
                alerts.append(obs)
                if isinstance(obs, CudaOomAlert):
                    self.last_cuda_oom = obs
        self.alerts += alerts
        del self.alerts[:-100]
        return alerts
