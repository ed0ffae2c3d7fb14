"""Evictions of the managed cache and of watched directories, copied once into the engine's events.

Each cache writes its own events file (``root/.cachewatch/events.jsonl``; a watched
directory's state dir). The engine follows each by byte offset and remembers the offsets in
its state directory, so an engine started again under the same name neither copies an
eviction twice nor loses one that happened while it was down. A file seen for the first time
is followed from its end: its history stays in the cache's own log (``cachewatch cache log``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import Event, EventLog

__all__ = ["EvictionFollower"]

log = logging.getLogger(__name__)


@dataclass
class _Source:
    root: str
    events: EventLog
    offset: int
    ino: int | None


class EvictionFollower:
    def __init__(self, offsets_file: Path) -> None:
        self.offsets_file = offsets_file
        self._sources: list[_Source] = []
        try:
            self._saved: dict[str, Any] = json.loads(offsets_file.read_text())
            if not isinstance(self._saved, dict):
                self._saved = {}
        except (OSError, ValueError):
            self._saved = {}

    def add(self, root: str, events: EventLog) -> None:
        path = str(events.path)
        try:
            st = os.stat(path)
            size, ino = st.st_size, st.st_ino
        except FileNotFoundError:
            size, ino = 0, None
        saved = self._saved.get(path)
        if isinstance(saved, dict) and saved.get("ino") == ino and isinstance(saved.get("offset"), int) and saved["offset"] <= size:
            offset = saved["offset"]
        else:
            offset = size
        self._sources.append(_Source(root, events, offset, ino))

    def poll(self) -> list[tuple[str, Event]]:
        """New eviction events of every source, as ``(root, event)``; one ``stat`` each when nothing is new."""
        out: list[tuple[str, Event]] = []
        moved = False
        for src in self._sources:
            try:
                st = os.stat(src.events.path)
            except FileNotFoundError:
                continue
            if st.st_ino == src.ino and st.st_size == src.offset:
                continue
            if st.st_ino != src.ino:
                src.ino, src.offset = st.st_ino, 0  # rotated or recreated: a new file from its start
            events, offset = src.events.tail(src.offset)
            if offset != src.offset:
                src.offset = offset
                moved = True
            out.extend((src.root, e) for e in events if e.kind.startswith("eviction"))
        if moved:
            self._save()
        return out

    def _save(self) -> None:
        data = {str(s.events.path): {"ino": s.ino, "offset": s.offset} for s in self._sources}
        tmp = self.offsets_file.with_name(self.offsets_file.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # the state dir is private
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(data))
            os.replace(tmp, self.offsets_file)
        except OSError as exc:
            log.warning("cannot save eviction offsets in %s: %s", self.offsets_file, exc)
