"""The state of a supervised training, as immutable values the engine publishes.

``TrainingInfo`` is what the dashboard's training panel and ``cachewatch status`` show;
``AttemptRecord`` is one launch of the command (the first run and each restart).
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

__all__ = ["TrainingState", "AttemptRecord", "TrainingInfo", "RestartPolicy", "signal_name", "describe_exit"]


class TrainingState(str, Enum):
    """Where the training is. Only ``running`` and ``paused`` have a live process group."""

    STARTING = "starting"  # no attempt launched yet
    RUNNING = "running"
    PAUSED = "paused"  # SIGSTOP sent to the whole process group
    RESTARTING = "restarting"  # exited, waiting out the back-off before the next attempt
    EXITED = "exited"  # ended on its own and will not be restarted
    STOPPED = "stopped"  # ended because someone asked (stop command, engine stop)
    FAILED = "failed"  # a restart could not launch the command at all

    @property
    def live(self) -> bool:
        return self in (TrainingState.RUNNING, TrainingState.PAUSED)

    @property
    def over(self) -> bool:
        return self in (TrainingState.EXITED, TrainingState.STOPPED, TrainingState.FAILED)


@dataclass(frozen=True)
class RestartPolicy:
    """``[run] restart``, ``max_restarts``, ``backoff``, ``backoff_max``."""

    mode: str = "never"  # "never" | "on-failure"
    max_restarts: int = 3
    backoff_s: float = 5.0
    backoff_max_s: float = 300.0

    def delay_s(self, restarts_done: int) -> float:
        """Back-off before restart number ``restarts_done + 1``: doubling, capped."""
        return min(self.backoff_s * (2 ** restarts_done), self.backoff_max_s)

    def allows(self, restarts_done: int) -> bool:
        return self.mode == "on-failure" and restarts_done < self.max_restarts


def signal_name(signum: int | None) -> str | None:
    if signum is None:
        return None
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def describe_exit(exit_code: int | None, signal: str | None, requested: bool = False) -> str:
    """The one line people read: ``exited with code 1``, ``killed by SIGKILL``."""
    if requested:
        tail = f" ({'killed by ' + signal if signal else 'code ' + str(exit_code)})"
        return "stopped on request" + tail
    if signal:
        return f"killed by {signal}"
    if exit_code == 0:
        return "finished (exit code 0)"
    return f"exited with code {exit_code}"


@dataclass(frozen=True)
class AttemptRecord:
    """One launch of the training command."""

    attempt: int
    pid: int
    started: float
    ended: float | None = None
    exit_code: int | None = None  # None while running or when killed by a signal
    signal: str | None = None  # "SIGKILL" when the process died of a signal
    requested: bool = False  # ended by a stop/restart we asked for, not on its own

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def failed(self) -> bool:
        return self.ended is not None and not self.requested and (self.signal is not None or self.exit_code != 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "pid": self.pid,
            "started": self.started,
            "ended": self.ended,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "requested": self.requested,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AttemptRecord":
        return cls(
            attempt=int(d["attempt"]),
            pid=int(d["pid"]),
            started=float(d["started"]),
            ended=None if d.get("ended") is None else float(d["ended"]),
            exit_code=None if d.get("exit_code") is None else int(d["exit_code"]),
            signal=d.get("signal"),
            requested=bool(d.get("requested", False)),
        )


@dataclass(frozen=True)
class TrainingInfo:
    """The supervised training at one instant."""

    command: tuple[str, ...]
    state: TrainingState
    cwd: str | None = None
    log_path: str = ""
    pid: int | None = None  # leader of the process group while live
    attempt: int = 0  # 1 for the first launch, +1 per restart
    restarts: int = 0  # every relaunch, automatic or asked for
    failure_restarts: int = 0  # automatic ones, counted against max_restarts
    policy: RestartPolicy = RestartPolicy()
    first_started: float | None = None
    started: float | None = None  # this attempt
    ended: float | None = None  # this attempt, once over
    paused_s: float = 0.0  # time this attempt spent paused
    paused_since: float | None = None
    exit_code: int | None = None  # of the last attempt that ended
    signal: str | None = None
    exit_reason: str = ""
    next_restart_at: float | None = None
    launch_error: str | None = None
    history: tuple[AttemptRecord, ...] = ()  # the last attempts, oldest first

    def duration_s(self, now: float) -> float | None:
        """Wall time of this attempt so far (or in full, once over)."""
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        import time

        now = time.time() if now is None else now
        return {
            "command": list(self.command),
            "state": self.state.value,
            "cwd": self.cwd,
            "log_path": self.log_path,
            "pid": self.pid,
            "attempt": self.attempt,
            "restarts": self.restarts,
            "failure_restarts": self.failure_restarts,
            "restart_policy": self.policy.mode,
            "max_restarts": self.policy.max_restarts,
            "backoff_s": self.policy.backoff_s,
            "backoff_max_s": self.policy.backoff_max_s,
            "first_started": self.first_started,
            "started": self.started,
            "ended": self.ended,
            "duration_s": self.duration_s(now),
            "paused_s": self.paused_s,
            "paused_since": self.paused_since,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "exit_reason": self.exit_reason,
            "next_restart_at": self.next_restart_at,
            "launch_error": self.launch_error,
            "history": [a.to_json() for a in self.history],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TrainingInfo":
        return cls(
            command=tuple(d.get("command", ())),
            state=TrainingState(d["state"]),
            cwd=d.get("cwd"),
            log_path=str(d.get("log_path", "")),
            pid=d.get("pid"),
            attempt=int(d.get("attempt", 0)),
            restarts=int(d.get("restarts", 0)),
            failure_restarts=int(d.get("failure_restarts", 0)),
            policy=RestartPolicy(
                mode=str(d.get("restart_policy", "never")),
                max_restarts=int(d.get("max_restarts", 0)),
                backoff_s=float(d.get("backoff_s", 0.0)),
                backoff_max_s=float(d.get("backoff_max_s", 0.0)),
            ),
            first_started=d.get("first_started"),
            started=d.get("started"),
            ended=d.get("ended"),
            paused_s=float(d.get("paused_s", 0.0)),
            paused_since=d.get("paused_since"),
            exit_code=d.get("exit_code"),
            signal=d.get("signal"),
            exit_reason=str(d.get("exit_reason", "")),
            next_restart_at=d.get("next_restart_at"),
            launch_error=d.get("launch_error"),
            history=tuple(AttemptRecord.from_json(a) for a in d.get("history", ())),
        )
