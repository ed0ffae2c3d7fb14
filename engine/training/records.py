"""Reading back what :mod:`report` wrote: typed records, validated, from a file that is still growing.

The writer does no validation (it must stay cheap and never raise), so this side does it:
a field of the wrong type is dropped, not the whole record, and a torn line (a write cut
short by a full disk, then a later record appended to it) is recovered from the last
record start it contains.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["ReportRecord", "ReportReader", "parse_report_line", "RECORD_KINDS"]

RECORD_KINDS = ("progress", "epoch_start", "epoch_end", "checkpoint", "event")
MAX_LINE_BYTES = 1 << 20
_READ_BYTES = 4 << 20
_RECORD_START = b'{"v":'


def as_count(value: Any) -> int | None:
    """A non-negative whole number from what a script passed (``4``, ``4.0``, ``"4"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def as_number(value: Any) -> float | None:
    """A float from a metric value; NaN and infinities are kept (a diverged loss is news)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for k, v in value.items():
        n = as_number(v)
        if isinstance(k, str) and n is not None:
            out[k] = n
    return out


@dataclass(frozen=True)
class ReportRecord:
    """One line of the progress file, validated. ``time_s`` is the writer's wall clock."""

    kind: str
    time_s: float
    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    path: str | None = None
    name: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    pid: int | None = None
    rank: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> "ReportRecord":
        """Validate one decoded line; raises ValueError when it is not a usable record."""
        if not isinstance(record, Mapping):
            raise ValueError(f"progress record {record!r} is not a JSON object")
        kind = record.get("kind")
        if kind not in RECORD_KINDS:
            raise ValueError(f"progress record kind {kind!r} is not one of {', '.join(RECORD_KINDS)}")
        t = as_number(record.get("t", record.get("time_s")))
        if t is None or not math.isfinite(t):
            raise ValueError(f"progress record has no usable time: {record.get('t')!r}")
        fields = record.get("fields")
        path = record.get("path")
        name = record.get("name")
        return cls(
            kind=kind,
            time_s=t,
            epoch=as_count(record.get("epoch")),
            total_epochs=as_count(record.get("total_epochs")),
            step=as_count(record.get("step")),
            total_steps=as_count(record.get("total_steps")),
            loss=as_number(record.get("loss")),
            metrics=_metrics(record.get("metrics")),
            path=str(path) if path is not None else None,
            name=str(name) if name is not None else None,
            fields=dict(fields) if isinstance(fields, Mapping) else {},
            pid=as_count(record.get("pid")),
            rank=as_count(record.get("rank")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": 1, "kind": self.kind, "t": self.time_s}
        for name in ("epoch", "total_epochs", "step", "total_steps", "loss", "path", "name", "pid", "rank"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        if self.fields:
            out["fields"] = dict(self.fields)
        return out


def parse_report_line(raw: bytes | str) -> ReportRecord | None:
    """The record on one line, or None for a blank, foreign or hopelessly torn line."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    raw = raw.strip()
    if not raw or len(raw) > MAX_LINE_BYTES:
        return None
    for start in _record_starts(raw):
        try:
            return ReportRecord.from_json(json.loads(raw[start:]))
        except (ValueError, TypeError, RecursionError):
            continue
    return None


def _record_starts(raw: bytes) -> list[int]:
    # The whole line first; then, for a line that begins with the remains of a torn write,
    # the last record start inside it (a later record appended right after the torn bytes).
    starts = [0]
    last = raw.rfind(_RECORD_START)
    if last > 0:
        starts.append(last)
    return starts


class ReportReader:
    """Follows a progress file by offset: ``read_new()`` returns the records appended since last time.

    A line still being written stays unread until its newline arrives. A file that shrank
    or was replaced (another inode) is read again from the start.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset = 0
        self._ino: int | None = None
        self._partial = b""
        self.bad_lines = 0

    def read_new(self) -> list[ReportRecord]:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self._ino is not None and (st.st_ino != self._ino or st.st_size < self.offset):
                    self.offset, self._partial = 0, b""
                self._ino = st.st_ino
                fh.seek(self.offset)
                chunk = fh.read(_READ_BYTES)
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        end = data.rfind(b"\n")
        if end < 0:
            # No newline yet: keep the partial line, but never let a runaway one grow without bound.
            self._partial = data if len(data) <= MAX_LINE_BYTES else b""
            return []
        self._partial = data[end + 1 :]
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial = b""
        out = []
        for raw in data[:end].split(b"\n"):
            if not raw.strip():
                continue
            rec = parse_report_line(raw)
            if rec is None:
                self.bad_lines += 1
            else:
                out.append(rec)
        return out
