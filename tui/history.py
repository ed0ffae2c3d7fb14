"""Short histories (cache size, GPU utilization and memory) for the sparklines.

The engine's snapshots hold the present only; the dashboard keeps the recent past. A
:class:`HistoryRecorder` lives in the polling thread and is fed each polled snapshot;
:meth:`HistoryRecorder.view` hands the UI an immutable :class:`History` copy.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Mapping

from cachewatch.engine.daemon.snapshot import EngineSnapshot

__all__ = ["History", "HistoryRecorder", "HISTORY_POINTS"]

HISTORY_POINTS = 240  # four minutes at the default 1 s refresh; wider than any panel


@dataclass(frozen=True)
class History:
    cache_bytes: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # root -> used bytes
    watched_bytes: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # root -> size bytes
    gpu_util_percent: Mapping[int, tuple[float | None, ...]] = field(default_factory=dict)
    gpu_memory_bytes: Mapping[int, tuple[float | None, ...]] = field(default_factory=dict)
    loss: tuple[float, ...] = ()


class HistoryRecorder:
    def __init__(self, points: int = HISTORY_POINTS) -> None:
        self._points = points
        self._series: dict[tuple[str, Any], collections.deque[Any]] = {}
        self._last_seq: int | None = None
        self._last_step: Any = None
        self._view: History | None = None

    def _add(self, kind: str, key: Any, value: Any) -> None:
        q = self._series.get((kind, key))
        if q is None:
            q = self._series[(kind, key)] = collections.deque(maxlen=self._points)
        q.append(value)

    def record(self, snap: EngineSnapshot) -> None:
        """One point per poll; a snapshot polled twice (nothing changed) adds nothing."""
        if snap.seq == self._last_seq:
            return
        self._last_seq = snap.seq
        self._view = None
        for c in snap.caches:
            if c.stats is not None:
                self._add("cache", c.root, float(c.stats.used_bytes))
        for w in snap.watched:
            self._add("watched", w.root, float(w.size_bytes))
        for g in snap.gpu.gpus if snap.gpu is not None else ():
            self._add("util", g.index, g.utilization_percent)
            self._add("gmem", g.index, g.memory_used_bytes)
        progress = snap.progress
        loss = progress.loss if progress is not None else None
        step = (progress.epoch, progress.step) if progress is not None else (None, None)
        if loss is not None and step != self._last_step:
            self._last_step = step
            self._add("loss", None, float(loss))

    def view(self) -> History:
        """The same object until something is recorded, so panels can tell nothing changed."""
        if self._view is not None:
            return self._view

        def pick(kind: str) -> dict[Any, tuple[Any, ...]]:
            return {key: tuple(q) for (k, key), q in self._series.items() if k == kind}

        self._view = History(
            cache_bytes=pick("cache"),
            watched_bytes=pick("watched"),
            gpu_util_percent=pick("util"),
            gpu_memory_bytes=pick("gmem"),
            loss=pick("loss").get(None, ()),
        )
        return self._view
