"""The dashboard's data for an engine on another machine: its snapshot and output through Redis.

A :class:`~cachewatch.tui.source.SnapshotSource` like the local one, so the drill-down is the
same dashboard (same panels, same eviction log, same keys and confirmations). Reading sets the
engine's ``watching`` key, which makes the engine publish its full snapshot and its output
while (and only while) someone looks. Commands go through the engine's command stream and
are refused at once when that engine does not accept them.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from cachewatch.engine.config import FleetConfig
from cachewatch.engine.daemon.errors import CommandFailed, ProtocolError
from cachewatch.engine.daemon.results import CommandResult, decode_result
from cachewatch.engine.daemon.snapshot import EngineSnapshot
from cachewatch.engine.fleet.reader import RemoteEngine

from .history import HistoryRecorder
from .logtext import LogLines
from .source import Update

__all__ = ["RedisSource"]


class RedisSource:
    def __init__(self, cfg: FleetConfig, engine_id: str) -> None:
        self.name = engine_id
        self._poller = RemoteEngine(cfg, engine_id)
        self._commander = RemoteEngine(cfg, engine_id)
        self._poll_lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._history = HistoryRecorder()
        self._lines = LogLines()
        self._last: EngineSnapshot | None = None

    def poll(self) -> Update:
        with self._poll_lock:
            p = self._poller.poll()
            if p.snapshot is None:
                # Lost or unreachable: the last picture stays, under the error that says it is old.
                return Update(self._last, self._history.view(), error=p.error)
            if p.output_reset:
                self._lines.reset()
            lines: list[str] = []
            for chunk in p.output:
                lines.extend(self._lines.feed(chunk))
            self._last = p.snapshot
            self._history.record(p.snapshot)
            return Update(p.snapshot, self._history.view(), tuple(lines[-2000:]), p.output_reset, self._lines.pending,
                          error=p.error)

    def command(self, name: str, args: Mapping[str, Any]) -> CommandResult:
        with self._command_lock:
            data = self._commander.command(name, dict(args))
        try:
            return decode_result(name, data)
        except ProtocolError as exc:
            raise CommandFailed(str(exc), "failed") from None

    def close(self) -> None:
        self._poller.close()
        self._commander.close()
