"""Structured events kept on disk as JSON lines: evictions, training state, alerts, job progress.

One line per event, appended with ``O_APPEND`` in a single ``write`` so lines from
several processes never interleave. The file rotates to ``<name>.1`` past
``max_bytes`` (one generation kept), so the log never grows without bound.
Readers skip a torn last line (a crash mid-write) instead of failing.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

__all__ = ["Event", "EventLog", "EVENT_FORMAT_VERSION"]

EVENT_FORMAT_VERSION = 1
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Event:
    """One event. ``kind`` is dotted (``eviction``, ``training.exited``, ``alert``, ``job.progress``)."""

    kind: str
    time: float
    fields: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": EVENT_FORMAT_VERSION, "kind": self.kind, "time": self.time}
        if self.source:
            out["source"] = self.source
        out.update(self.fields)
        return out

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> "Event":
        rest = {k: v for k, v in record.items() if k not in ("v", "kind", "time", "source")}
        return cls(
            kind=str(record.get("kind", "")),
            time=float(record.get("time", 0.0)),
            fields=rest,
            source=str(record.get("source", "")),
        )


class EventLog:
    """An append-only JSON-lines event file shared by any number of processes."""

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES, source: str = "") -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.source = source
        # One descriptor kept open per process (appends are on hot paths such as eviction);
        # reopened after a fork or when another process rotated the file away.
        self._fd = -1
        self._fd_pid = -1
        self._lock = threading.Lock()
        _LOGS.add(self)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0 and self._fd_pid == os.getpid():
                os.close(self._fd)
            self._fd = -1

    @property
    def rotated_path(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, kind: str, /, *, time_s: float | None = None, **fields: Any) -> Event:
        """Write one event and return it."""
        event = Event(kind=kind, time=time.time() if time_s is None else time_s, fields=fields, source=self.source)
        self.write(event)
        return event

    def write(self, event: Event) -> None:
        line = (json.dumps(event.to_json(), separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            fd = self._current_fd()
            os.write(fd, line)  # one write with O_APPEND: lines of several processes never interleave
            size = os.fstat(fd).st_size
        if size > self.max_bytes:
            self._rotate(size)

    def _current_fd(self) -> int:
        if self._fd >= 0 and self._fd_pid == os.getpid():
            try:
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
        # A log in a private directory (an engine's state dir) stays private when rotation
        # creates it anew; a cache's eviction log stays readable by whoever may read the cache.
        try:
            private = os.stat(self.path.parent).st_mode & 0o077 == 0
        except OSError:
            private = True
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600 if private else 0o644)
        self._fd_pid = os.getpid()
        return self._fd

    def _rotate(self, seen_size: int) -> None:
        # Two writers may both see the file over the limit; only one rename may win, and
        # the loser must not rotate the fresh file away. Compare sizes before renaming.
        try:
            if os.stat(self.path).st_size >= seen_size:
                os.replace(self.path, self.rotated_path)
        except FileNotFoundError:
            pass

    def read(
        self,
        *,
        kinds: Iterable[str] | None = None,
        since: float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Event]:
        """Events in time order (oldest first unless ``newest_first``), filtered by kind prefix and time."""
        wanted = tuple(kinds) if kinds is not None else None
        out = [
            e
            for e in self._iter_all()
            if (wanted is None or e.kind.startswith(wanted)) and (since is None or e.time >= since)
        ]
        if newest_first:
            out.reverse()
        if limit is not None:
            out = out[:limit] if newest_first else out[-limit:]
        return out

    def _iter_all(self) -> Iterator[Event]:
        for p in (self.rotated_path, self.path):
            yield from _read_file(p)

    def tail(self, offset: int) -> tuple[list[Event], int]:
        """Events appended after byte ``offset`` of the current file, and the new offset.

        A file that shrank (rotated) restarts at 0. A torn last line stays unread until complete.
        """
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if offset > size:
                    offset = 0
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            return [], 0
        end = chunk.rfind(b"\n")
        if end < 0:
            return [], offset
        events = list(_parse_lines(chunk[: end + 1]))
        return events, offset + end + 1


_LOGS: "weakref.WeakSet[EventLog]" = weakref.WeakSet()


def _reset_locks_in_child() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    for log in list(_LOGS):
        log._lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_locks_in_child)


def _read_file(path: Path) -> Iterator[Event]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    yield from _parse_lines(data)


def _parse_lines(data: bytes) -> Iterator[Event]:
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a torn line from a crash mid-write
        if isinstance(record, dict) and "kind" in record:
            try:
                yield Event.from_json(record)
            except (TypeError, ValueError):
                continue
