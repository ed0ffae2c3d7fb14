"""Where the dashboard's data comes from: a running engine, reached through its socket.

A :class:`SnapshotSource` is called only from worker threads: :meth:`poll` returns one
:class:`Update` (the engine's latest immutable snapshot, the new lines of training output,
the sparkline history), :meth:`command` runs one engine command. The UI thread never
touches a socket or a file; it renders the :class:`Update` values it is handed.

The engine publishes snapshots up to ten times a second; the dashboard polls once per
refresh period instead of subscribing, so a busy training costs the dashboard one small
request a second, and a slow answer delays the next poll rather than piling up behind it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from cachewatch.engine.daemon.client import EngineClient
from cachewatch.engine.daemon.errors import CommandFailed, ConnectionLost, EngineError, ProtocolError
from cachewatch.engine.daemon.results import CommandResult
from cachewatch.engine.daemon.runtime import EngineEntry
from cachewatch.engine.daemon.snapshot import EngineSnapshot
from cachewatch.engine.errors import CachewatchError

from .history import History, HistoryRecorder
from .logtext import LogLines

__all__ = ["Update", "SnapshotSource", "EngineSource", "CommandFailed"]

LOG_FIRST_BYTES = 16 * 1024  # what a dashboard shows of the output already written when it attaches
LOG_POLL_MAX_BYTES = 256 * 1024  # read per poll; a training printing faster than this is skipped ahead
LOG_KEEP_LINES = 2000


@dataclass(frozen=True)
class Update:
    """One poll's worth of news for the UI."""

    snapshot: EngineSnapshot | None
    history: History = field(default_factory=History)
    log_lines: tuple[str, ...] = ()
    log_reset: bool = False  # clear the log before writing ``log_lines`` (first poll, new engine)
    log_pending: str = ""  # the line being written (a tqdm bar in flight)
    error: str | None = None  # why this poll failed; ``snapshot`` is then the last good one
    fatal: bool = False  # the engine could not be started at all: the dashboard should close


class SnapshotSource(Protocol):
    """What the app needs from an engine. Every method may block; call from a thread."""

    name: str

    def poll(self) -> Update: ...

    def command(self, name: str, args: Mapping[str, Any]) -> CommandResult:
        """Run an engine command; raise :class:`CommandFailed` with the engine's reason."""

    def close(self) -> None: ...


class EngineSource:
    """A :class:`SnapshotSource` over an engine's control socket.

    ``entry`` is a running engine; or give ``launch``, a function that starts one and
    returns its entry, called (once) by the first poll, so the dashboard is on screen
    while the engine starts.
    """

    def __init__(self, entry: EngineEntry | None = None, *, launch: Callable[[], EngineEntry] | None = None,
                 name: str = "", client_name: str = "dashboard", timeout_s: float = 10.0) -> None:
        if entry is None and launch is None:
            raise ValueError("EngineSource needs an entry or a launch function")
        self.entry = entry
        self._launch = launch
        self.name = entry.name if entry is not None else name
        self._client_name = client_name
        self._timeout_s = timeout_s
        self._poll_lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._poller: EngineClient | None = None
        self._commander: EngineClient | None = None
        self._history = HistoryRecorder()
        self._lines = LogLines()
        self._log_offset: int | None = None
        self._last: EngineSnapshot | None = None
        self._engine_pid: int | None = None
        self._closed = False

    # ------------------------------------------------------------------------------ connect
    def _ensure_entry(self) -> EngineEntry:
        if self.entry is None:
            assert self._launch is not None
            self.entry = self._launch()
            self.name = self.entry.name
        return self.entry

    def _connect(self) -> EngineClient:
        entry = self._ensure_entry()
        try:
            return EngineClient(entry.socket, client_name=self._client_name, timeout_s=self._timeout_s)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ConnectionLost(f"engine {entry.name!r} is not running (no one listens on {entry.socket})") from None

    # --------------------------------------------------------------------------------- poll
    def poll(self) -> Update:
        with self._poll_lock:
            if self._closed:
                return Update(self._last, self._history.view(), error="closed")
            try:
                if self._poller is None:
                    self._poller = self._connect()
                snap = self._poller.snapshot()
                lines, reset = self._read_log(self._poller, snap)
            except (EngineError, CommandFailed) as exc:
                if self.entry is None:  # the engine could not even be started
                    return Update(None, error=str(exc), fatal=True)
                return self._failed(str(exc))
            except (ConnectionLost, ProtocolError, OSError) as exc:
                return self._failed(str(exc))
            except CachewatchError as exc:
                return Update(self._last, self._history.view(), error=str(exc), fatal=self.entry is None)
            self._last = snap
            self._history.record(snap)
            return Update(snap, self._history.view(), lines, reset, self._lines.pending)

    def _failed(self, reason: str) -> Update:
        self._drop_poller()
        name = self.name or "the engine"
        return Update(self._last, self._history.view(), error=f"lost {name}: {reason}")

    def _drop_poller(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    def _read_log(self, client: EngineClient, snap: EngineSnapshot) -> tuple[tuple[str, ...], bool]:
        reset = False
        size = snap.log_size_bytes
        if self._engine_pid != snap.engine.pid:  # first poll, or another engine took the name
            self._engine_pid = snap.engine.pid
            self._log_offset = None
        if self._log_offset is None or size < self._log_offset:
            self._lines.reset()
            reset = True
            self._log_offset = max(snap.engine.log_start_offset, size - LOG_FIRST_BYTES)
            skip_partial = self._log_offset > snap.engine.log_start_offset
        elif size - self._log_offset > LOG_POLL_MAX_BYTES:
            # Output faster than anyone reads: show the newest, say what was skipped.
            skipped = size - LOG_FIRST_BYTES - self._log_offset
            self._lines.reset()
            self._log_offset = size - LOG_FIRST_BYTES
            lines = [f"[cachewatch: {skipped} bytes of output skipped]"]
            return tuple(lines) + self._read_from(client, size, skip_partial=True), False
        else:
            skip_partial = False
        if self._log_offset >= size:
            return (), reset
        return self._read_from(client, size, skip_partial=skip_partial), reset

    def _read_from(self, client: EngineClient, size: int, *, skip_partial: bool) -> tuple[str, ...]:
        assert self._log_offset is not None
        out: list[str] = []
        while self._log_offset < size:
            chunk = client.log(offset=self._log_offset, max_bytes=LOG_POLL_MAX_BYTES)
            if chunk.next_offset <= self._log_offset:
                break
            self._log_offset = chunk.next_offset
            lines = self._lines.feed(chunk.data)
            if skip_partial and lines:
                lines = lines[1:]  # started mid-line
                skip_partial = False
            out.extend(lines)
        return tuple(out[-LOG_KEEP_LINES:])

    # ------------------------------------------------------------------------------ command
    def command(self, name: str, args: Mapping[str, Any]) -> CommandResult:
        with self._command_lock:
            for attempt in (1, 2):
                try:
                    if self._commander is None:
                        self._commander = self._connect()
                    return self._commander.command(name, **dict(args))
                except (ConnectionLost, OSError) as exc:
                    if self._commander is not None:
                        self._commander.close()
                        self._commander = None
                    if attempt == 2:
                        raise CommandFailed(f"{name}: the engine is not reachable ({exc})", "unavailable") from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        """Detach: close our connections. The engine and the training go on."""
        self._closed = True
        with self._poll_lock:
            self._drop_poller()
        with self._command_lock:
            if self._commander is not None:
                self._commander.close()
                self._commander = None
