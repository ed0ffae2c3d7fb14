"""What each engine command answers, as frozen dataclasses: the other half of the contract.

The engine sends a command's result as a JSON object; :func:`decode_result` turns it into
the type :data:`RESULT_TYPES` names for that command, so a client reads
``result.training.state`` instead of digging into a dict with ``.get``. Unknown keys are
ignored (a newer engine may add some); a missing required one raises
:class:`~cachewatch.engine.daemon.errors.ProtocolError` at once instead of a blank later.

======================================  =====================
command                                 result
======================================  =====================
pause, resume, restart, start           :class:`TrainingResult`
stop                                    :class:`StopResult`
dismiss_alert                           :class:`AlertResult`
verify, build, split, cancel_job        :class:`JobResult`
evict                                   :class:`EvictResult`
======================================  =====================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

from ..training.runstate import TrainingInfo
from .errors import ProtocolError
from .snapshot import Alert, JobView, _Json

__all__ = [
    "TrainingResult",
    "StopResult",
    "AlertResult",
    "JobResult",
    "EvictResult",
    "CommandResult",
    "RESULT_TYPES",
    "decode_result",
]


@dataclass(frozen=True)
class TrainingResult(_Json):
    """``pause``, ``resume``, ``restart``, ``start``: the training as the command left it."""

    training: TrainingInfo


@dataclass(frozen=True)
class StopResult(_Json):
    """``stop``: the training as it ended (None: this engine runs none) and whether the engine goes too."""

    engine_stopping: bool
    training: TrainingInfo | None = None


@dataclass(frozen=True)
class AlertResult(_Json):
    """``dismiss_alert``: the alert, now dismissed."""

    alert: Alert


@dataclass(frozen=True)
class JobResult(_Json):
    """``verify``, ``build``, ``split`` (the job just started) and ``cancel_job`` (the job being cancelled).

    The job's outcome arrives later, in the snapshot's ``jobs``."""

    job: JobView


@dataclass(frozen=True)
class EvictResult(_Json):
    """``evict``: what one eviction pass removed (or, ``dry_run``, would remove) from ``root``."""

    root: str
    describe: str  # the human line ("Evicted 12 files (1.2 GB) from cache /data ...")
    reason: str
    files: int
    bytes: int
    size_before: int
    size_after: int
    keys: tuple[str, ...] = ()  # at most the first 100
    pinned_skipped: int = 0
    dry_run: bool = False
    time: float = 0.0
    duration_s: float = 0.0


CommandResult = Union[TrainingResult, StopResult, AlertResult, JobResult, EvictResult]

# command name -> the type of its result; tests check it covers protocol.COMMANDS
RESULT_TYPES: Mapping[str, type[CommandResult]] = {
    "pause": TrainingResult,
    "resume": TrainingResult,
    "restart": TrainingResult,
    "start": TrainingResult,
    "stop": StopResult,
    "dismiss_alert": AlertResult,
    "verify": JobResult,
    "build": JobResult,
    "split": JobResult,
    "cancel_job": JobResult,
    "evict": EvictResult,
}


def decode_result(command: str, data: Any) -> CommandResult:
    """The typed result of ``command`` from the engine's JSON; :class:`ProtocolError` if it does not fit."""
    cls = RESULT_TYPES.get(command)
    if cls is None:
        raise ProtocolError(f"no result type for command {command!r}; known: {', '.join(sorted(RESULT_TYPES))}")
    if not isinstance(data, Mapping):
        raise ProtocolError(f"the engine answered {command!r} with {type(data).__name__}, not an object")
    try:
        return cls.from_json(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise ProtocolError(f"the engine's answer to {command!r} does not fit {cls.__name__}: {exc}") from None
