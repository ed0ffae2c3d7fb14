"""Progress reporting for training scripts: ``report.progress(epoch=4, total_epochs=15, step=120, ...)``.

Each call appends one JSON line to the file named by ``CACHEWATCH_PROGRESS_FILE``,
which ``cachewatch run`` sets for the training it launches. With the variable unset
(the script run by hand) every call is a cheap no-op, so a script can keep the calls.

Three promises to the training script, because a monitoring hook must never cost a run:

* it never raises: a full disk, a removed file or an unserialisable value drops the
  record (``dropped()`` counts them) and training goes on;
* lines never interleave: each record is one ``os.write`` on an ``O_APPEND`` descriptor,
  so DataLoader workers, threads and forked children can all report;
* it is cheap: stdlib only, a few microseconds per call (``benchmarks/bench_report.py``).

The records are read back by :class:`cachewatch.engine.training.records.ReportReader`.
"""

from __future__ import annotations

import json
import os
import threading
import time

__all__ = [
    "ENV_VAR",
    "FORMAT_VERSION",
    "enabled",
    "progress",
    "epoch_start",
    "epoch_end",
    "checkpoint",
    "event",
    "dropped",
]

ENV_VAR = "CACHEWATCH_PROGRESS_FILE"
FORMAT_VERSION = 1

_environ = os.environ
_lock = threading.Lock()
# (path, fd, rank) of the open progress file; re-opened when the variable names another file.
_state: tuple[str, int, str | None] | None = None
_dropped = 0
_torn = False  # the last write was short (disk full): start the next line on a fresh line


def _reset_after_fork() -> None:
    # A fork while another thread held the lock would leave the child's copy locked forever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _jsonable(value: object) -> object:
    # numpy scalars and 0-d torch tensors (`loss.item()` forgotten) carry .item(); anything else
    # becomes its str so a strange value still reaches the dashboard instead of dropping the line.
    item = getattr(value, "item", None)
    if item is not None:
        try:
            return item()
        except Exception:
            pass
    try:
        return float(value)  # type: ignore[arg-type]
    except Exception:
        return str(value)


_encode = json.JSONEncoder(separators=(",", ":"), default=_jsonable).encode


def _open(path: str) -> int:
    global _state
    with _lock:
        if _state is not None and _state[0] == path:
            return _state[1]
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old = _state
        _state = (path, fd, _environ.get("RANK"))
        if old is not None:
            try:
                os.close(old[1])
            except OSError:
                pass
        return fd


def _write(record: dict) -> None:
    global _dropped, _torn
    path = _environ.get(ENV_VAR)
    if not path:
        return
    try:
        state = _state
        fd = state[1] if state is not None and state[0] == path else _open(path)
        record["t"] = time.time()
        record["pid"] = os.getpid()
        rank = _state[2] if _state is not None else None
        if rank is not None:
            record["rank"] = rank
        line = (("\n" if _torn else "") + _encode(record) + "\n").encode()
        written = os.write(fd, line)
        _torn = written != len(line)
        if _torn:
            _dropped += 1
    except Exception:
        # Whatever went wrong (ENOSPC, EBADF after a close, a circular metrics dict), the
        # training must not see it. The reader skips a torn line.
        _dropped += 1


def enabled() -> bool:
    """True when a supervisor is listening (the variable is set)."""
    return bool(_environ.get(ENV_VAR))


def dropped() -> int:
    """Records this process could not write (disk full, bad value); for tests and diagnostics."""
    return _dropped


def progress(
    epoch: int | None = None,
    total_epochs: int | None = None,
    step: int | None = None,
    total_steps: int | None = None,
    loss: float | None = None,
    lr: float | None = None,
    **metrics: object,
) -> None:
    """Where the training is: ``step`` steps of ``total_steps`` done in epoch ``epoch`` of ``total_epochs``.

    ``epoch`` is the epoch number as the script counts it (``Epoch 4/15`` style, 1-based; a
    script that starts at 0 is recognised when it reports epoch 0). ``step`` counts the steps
    done in the current epoch. Extra keyword arguments are metrics (``accuracy=0.87``).
    """
    if not _environ.get(ENV_VAR):
        return
    record: dict = {"v": FORMAT_VERSION, "kind": "progress"}
    if epoch is not None:
        record["epoch"] = epoch
    if total_epochs is not None:
        record["total_epochs"] = total_epochs
    if step is not None:
        record["step"] = step
    if total_steps is not None:
        record["total_steps"] = total_steps
    if loss is not None:
        record["loss"] = loss
    if lr is not None:
        metrics["lr"] = lr
    if metrics:
        record["metrics"] = metrics
    _write(record)


def epoch_start(epoch: int, total_epochs: int | None = None, *, total_steps: int | None = None) -> None:
    """An epoch begins now (gives the ETA the exact epoch boundary)."""
    if not _environ.get(ENV_VAR):
        return
    record: dict = {"v": FORMAT_VERSION, "kind": "epoch_start", "epoch": epoch}
    if total_epochs is not None:
        record["total_epochs"] = total_epochs
    if total_steps is not None:
        record["total_steps"] = total_steps
    _write(record)


def epoch_end(epoch: int, total_epochs: int | None = None, *, loss: float | None = None, **metrics: object) -> None:
    """Epoch ``epoch`` is complete (validation metrics welcome: ``val_loss=0.3``)."""
    if not _environ.get(ENV_VAR):
        return
    record: dict = {"v": FORMAT_VERSION, "kind": "epoch_end", "epoch": epoch}
    if total_epochs is not None:
        record["total_epochs"] = total_epochs
    if loss is not None:
        record["loss"] = loss
    if metrics:
        record["metrics"] = metrics
    _write(record)


def checkpoint(path: object, *, epoch: int | None = None, **fields: object) -> None:
    """A checkpoint was saved at ``path``."""
    if not _environ.get(ENV_VAR):
        return
    record: dict = {"v": FORMAT_VERSION, "kind": "checkpoint", "path": os.fspath(path) if isinstance(path, os.PathLike) else path}
    if epoch is not None:
        record["epoch"] = epoch
    if fields:
        record["fields"] = fields
    _write(record)


def event(kind: str, **fields: object) -> None:
    """Anything else worth a line in cachewatch's event stream (``event("lr_drop", lr=1e-5)``)."""
    if not _environ.get(ENV_VAR):
        return
    _write({"v": FORMAT_VERSION, "kind": "event", "name": kind, "fields": fields})
