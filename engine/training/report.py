"""Progress reporting for training scripts: ``report.progress(epoch=4, total_epochs=15, step=120, ...)``.

Each call appends one JSON line to the file named by ``CACHEWATCH_PROGRESS_FILE``,
which ``cachewatch run`` sets for the training it launches. With the variable unset
(the script run by hand) every call is a cheap no-op, so a script can keep the calls.

Three promises to the training script, because a monitoring hook must never cost a run:

* it never raises: a full disk, a removed file or an unserialisable value drops the
  record (``dropped()`` counts them) and training goes on;
* lines never interleave: each record is one ``os.write`` on an ``O_APPEND`` descriptor,
  so DataLoader workers, threads and forked children can all report;
* it is cheap: stdlib only, under 20 µs per call and well under 1 µs when unset
  (``benchmarks/bench_report.py``).

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

# os.environ.get() encodes the key and decodes the value on every call (microseconds on a
# slow machine, twice the JSON encoding's share); the bytes mapping underneath answers
# the same question, kept in step by os.environ itself, in a fraction of that.
_ENV_KEY = ENV_VAR.encode()
_environ_data = getattr(os.environ, "_data", None)
if not isinstance(_environ_data, dict) or os.name != "posix":

    def _target() -> str | bytes | None:
        return os.environ.get(ENV_VAR)

else:
    _target = lambda: _environ_data.get(_ENV_KEY)  # noqa: E731
_lock = threading.Lock()
# (path, fd, rank) of the open progress file; re-opened when the variable names another file.
_state: tuple[str | bytes, int, str | None] | None = None
_dropped = 0
_checked = 0.0  # monotonic time of the last check that the path is still our file
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


def _open(path: str | bytes) -> int:
    global _state, _checked
    with _lock:
        if _state is not None and _state[0] == path:
            return _state[1]
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        old = _state
        _state = (path, fd, os.environ.get("RANK"))
        _checked = time.monotonic()
        if old is not None:
            _close(old[1])
        return fd


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _forget(fd: int) -> None:
    """Drop the cached descriptor so the next call opens the path again."""
    global _state
    with _lock:
        if _state is not None and _state[1] == fd:
            _state = None
            _close(fd)


def _still_current(path: str | bytes, fd: int) -> bool:
    # Once a second, not per call: has the file been removed or replaced under us?
    global _checked
    now = time.monotonic()
    if now - _checked < 1.0:
        return True
    _checked = now
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _write(path: str | bytes, record: dict) -> None:
    global _dropped, _torn
    try:
        state = _state
        if state is not None and state[0] == path and _still_current(path, state[1]):
            fd = state[1]
        else:
            if state is not None:
                _forget(state[1])
            fd = _open(path)
        record["t"] = time.time()
        record["pid"] = os.getpid()
        rank = _state[2] if _state is not None else None
        if rank is not None:
            record["rank"] = rank
        line = (("\n" if _torn else "") + _encode(record) + "\n").encode()
        try:
            written = os.write(fd, line)
        except OSError:
            # The file may have been removed (its space still held by our descriptor) or the
            # descriptor closed under us: one retry on a fresh open of the path.
            _forget(fd)
            written = os.write(_open(path), line)
        _torn = written != len(line)
        if _torn:
            _dropped += 1
    except Exception:
        # Whatever went wrong (ENOSPC, an unwritable path, a circular metrics dict), the
        # training must not see it. The reader skips a torn line.
        _dropped += 1


def enabled() -> bool:
    """True when a supervisor is listening (the variable is set)."""
    return bool(_target())


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
    path = _target()
    if not path:
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
    _write(path, record)


def epoch_start(epoch: int, total_epochs: int | None = None, *, total_steps: int | None = None) -> None:
    """An epoch begins now (gives the ETA the exact epoch boundary)."""
    path = _target()
    if not path:
        return
    record: dict = {"v": FORMAT_VERSION, "kind": "epoch_start", "epoch": epoch}
    if total_epochs is not None:
        record["total_epochs"] = total_epochs
    if total_steps is not None:
        record["total_steps"] = total_steps
    _write(path, record)


def epoch_end(epoch: int, total_epochs: int | None = None, *, loss: float | None = None, **metrics: object) -> None:
    """Epoch ``epoch`` is complete (validation metrics welcome: ``val_loss=0.3``)."""
    path = _target()
    if not path:
        return
    record: dict = {"v": FORMAT_VERSION, "kind": "epoch_end", "epoch": epoch}
    if total_epochs is not None:
        record["total_epochs"] = total_epochs
    if loss is not None:
        record["loss"] = loss
    if metrics:
        record["metrics"] = metrics
    _write(path, record)


def checkpoint(path: object, *, epoch: int | None = None, **fields: object) -> None:
    """A checkpoint was saved at ``path``."""
    target = _target()
    if not target:
        return
    record: dict = {"v": FORMAT_VERSION, "kind": "checkpoint", "path": os.fspath(path) if isinstance(path, os.PathLike) else path}
    if epoch is not None:
        record["epoch"] = epoch
    if fields:
        record["fields"] = fields
    _write(target, record)


def event(kind: str, **fields: object) -> None:
    """Anything else worth a line in cachewatch's event stream (``event("lr_drop", lr=1e-5)``)."""
    path = _target()
    if not path:
        return
    _write(path, {"v": FORMAT_VERSION, "kind": "event", "name": kind, "fields": fields})
