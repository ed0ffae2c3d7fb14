"""The engine's control socket: many clients, none of which can hurt the engine.

asyncio, not selectors: every client needs a bounded line reader (``StreamReader`` with a
``limit`` refuses a huge line without buffering it), a writer that can wait for a slow
reader with a timeout (``drain``), and a few timers (hello timeout); asyncio gives all
three, and the engine's own work stays in its threads, so the event loop only moves bytes.

Per client:

* The server checks the peer's uid (``SO_PEERCRED``) before saying anything; other users
  are refused even if the directory permissions were loosened.
* Messages to a client go through a bounded queue drained by one writer task. Snapshots
  coalesce (only the newest unsent one is kept); responses, events and log chunks queue,
  and a client whose queue passes ``max_queue_bytes`` or that does not read for
  ``send_timeout_s`` is dropped. The engine never waits for a client.
* A line longer than ``MAX_REQUEST_BYTES``, or one that is not JSON, gets an ``error`` and the
  connection is closed; an unknown type or command gets an error response and the
  connection stays open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import struct
import time
from collections import deque
from pathlib import Path
from typing import Any

from .._version import __version__
from ..events import Event
from .engine import Engine
from .errors import CommandFailed, ProtocolError
from .protocol import (
    COMMANDS,
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    ClientType,
    ErrorCode,
    ErrorInfo,
    Hello,
    Response,
    ServerType,
    check_version,
    decode_line,
    encode,
)
from .snapshot import EngineSnapshot

__all__ = ["EngineServer", "peer_credentials"]

log = logging.getLogger(__name__)
_HIGH_WATER_BYTES = 256 * 1024


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


class _Client:
    def __init__(self, server: "EngineServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.name = ""
        self.snapshots = False
        self.events = False
        self.event_kinds: tuple[str, ...] | None = None
        self.log_offset: int | None = None  # following the log from here when not None
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.pending_snapshot: bytes | None = None
        self.snapshot_interval_s = 0.0  # at most one snapshot per this (the newest); 0: every one
        self._last_snapshot_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.wakeup = asyncio.Event()
        self.closed = False
        self.close_after_flush = False
        self.tasks: set[asyncio.Task[Any]] = set()

    def send(self, message: dict[str, Any] | bytes) -> None:
        if self.closed:
            return
        data = message if isinstance(message, bytes) else encode(message)
        self.queue.append(data)
        self.queued_bytes += len(data)
        if self.queued_bytes > self.server.max_queue_bytes:
            log.warning("client pid %s does not read its messages; dropping it", self.pid)
            self.abort()
            return
        self.wakeup.set()

    def send_snapshot(self, data: bytes) -> None:
        if not self.closed:
            self.pending_snapshot = data  # an unsent older snapshot is simply replaced
            self.wakeup.set()

    def error_and_close(self, code: ErrorCode, message: str) -> None:
        self.send({"type": ServerType.ERROR.value, "error": ErrorInfo(code.value, message).to_json()})
        self.close_after_flush = True
        self.wakeup.set()

    def abort(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.queue.clear()
        self.pending_snapshot = None
        self.wakeup.set()
        try:
            self.writer.transport.abort()
        except Exception:
            pass

    def _snapshot_due(self) -> bool:
        """Whether the pending snapshot may go now; if not yet, wake the writer when it may."""
        if self.pending_snapshot is None:
            return False
        wait = self.snapshot_interval_s - (time.monotonic() - self._last_snapshot_sent)
        if wait <= 0:
            return True
        if self._timer is None:
            def fire() -> None:
                self._timer = None
                self.wakeup.set()

            self._timer = asyncio.get_running_loop().call_later(wait, fire)
        return False

    async def write_loop(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                if self.closed:
                    return
                while self.queue or self._snapshot_due():
                    if self.queue:
                        data = self.queue.popleft()
                        self.queued_bytes -= len(data)
                    else:
                        data, self.pending_snapshot = self.pending_snapshot, None  # type: ignore[assignment]
                        self._last_snapshot_sent = time.monotonic()
                    self.writer.write(data)
                    # Wait only when the kernel buffer is full (the client reads slower than we
                    # write); a timer per message would cost more than the message.
                    if self.writer.transport.get_write_buffer_size() > _HIGH_WATER_BYTES:
                        await asyncio.wait_for(self.writer.drain(), self.server.send_timeout_s)
                if self.close_after_flush:
                    return
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("client pid %s stopped reading for %ss; dropping it", self.pid, self.server.send_timeout_s)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            try:
                self.writer.transport.abort() if not self.close_after_flush else self.writer.close()
            except Exception:
                pass


class EngineServer:
    """Serves one :class:`Engine` on a Unix socket. Run :meth:`serve` in an event loop."""

    def __init__(
        self,
        engine: Engine,
        path: str | os.PathLike[str],
        *,
        max_clients: int = 64,
        max_queue_bytes: int = 8 * 1024 * 1024,
        send_timeout_s: float = 10.0,
        hello_timeout_s: float = 10.0,
        workers: int = 4,
        sock: socket.socket | None = None,
    ) -> None:
        self.engine = engine
        self.path = Path(path)
        self._sock = sock  # bound and listening already (the daemon binds before launching the training)
        self.max_clients = max_clients
        self.max_queue_bytes = max_queue_bytes
        self.send_timeout_s = send_timeout_s
        self.hello_timeout_s = hello_timeout_s
        self.clients: set[_Client] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine-cmd")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._closed: asyncio.Event | None = None
        self._removers: list[Any] = []
        self._last_snapshot: tuple[int, bytes] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        # (snapshot subscribers, event followers, log followers), recounted in the loop thread and
        # read by engine threads to skip waking the loop when nobody wants what they have.
        self._interest = (0, 0, 0)
        self._snapshot_interval: float | None = None  # the shortest interval a subscriber asked for

    # --------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        if self._sock is not None:
            self._server = await asyncio.start_unix_server(self._handle, sock=self._sock, limit=MAX_REQUEST_BYTES)
        else:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self._server = await asyncio.start_unix_server(self._handle, path=os.fspath(self.path), limit=MAX_REQUEST_BYTES)
            # The directory is 0700 already; 0600 on the socket is the second lock on the door.
            os.chmod(self.path, 0o600)
        self.engine.set_endpoints(socket_path=str(self.path))
        self._removers = [
            self.engine.add_snapshot_listener(lambda s: self._forward(0, self._on_snapshot, s),
                                              wants=lambda: self._snapshot_interval),
            self.engine.add_event_listener(lambda e: self._forward(1, self._on_event, e)),
            self.engine.add_log_listener(lambda o, d: self._forward(2, self._on_log, o, d)),
        ]

    async def serve(self) -> None:
        """Start (if needed) and serve until :meth:`close` or an engine stop request."""
        if self._server is None:
            await self.start()
        assert self._closed is not None
        await self._closed.wait()

    def _forward(self, kind: int, fn: Any, *args: Any) -> None:
        """Hand a push of one kind (0 snapshots, 1 events, 2 log) to the loop, if a client wants that kind."""
        if self._interest[kind]:
            self._threadsafe(fn, *args)

    def _threadsafe(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _recount(self) -> None:
        live = [c for c in self.clients if not c.closed]
        self._interest = (sum(c.snapshots for c in live), sum(c.events for c in live),
                          sum(c.log_offset is not None for c in live))
        intervals = [c.snapshot_interval_s for c in live if c.snapshots]
        self._snapshot_interval = min(intervals) if intervals else None

    async def close(self, reason: str = "engine stopping") -> None:
        """Finish in-flight requests, say ``bye`` to every client, stop listening."""
        if self._closed is None or self._closed.is_set():
            return
        for remove in self._removers:
            remove()
        if self._server is not None:
            self._server.close()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=self.engine.config.run.stop_grace + 15)
        for c in list(self.clients):
            c.send({"type": ServerType.BYE.value, "reason": reason})
            c.close_after_flush = True
            c.wakeup.set()
        if self.clients:
            await asyncio.wait([asyncio.ensure_future(_wait_closed(c)) for c in list(self.clients)], timeout=2)
        for c in list(self.clients):
            c.abort()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._executor.shutdown(wait=False)
        self._closed.set()

    # ---------------------------------------------------------------------- engine -> clients
    def _snapshot_bytes(self, snap: EngineSnapshot) -> bytes:
        if self._last_snapshot is None or self._last_snapshot[0] != snap.seq:
            self._last_snapshot = (snap.seq, encode({"type": ServerType.SNAPSHOT.value, "snapshot": snap.to_json()}))
        return self._last_snapshot[1]

    def _on_snapshot(self, snap: EngineSnapshot) -> None:
        subscribers = [c for c in self.clients if c.snapshots and not c.closed]
        if not subscribers:
            return  # no JSON encoding at all when nobody watches
        data = self._snapshot_bytes(snap)
        for c in subscribers:
            c.send_snapshot(data)

    def _on_event(self, event: Event) -> None:
        followers = [c for c in self.clients if c.events and not c.closed
                     and (c.event_kinds is None or event.kind.startswith(c.event_kinds))]
        if not followers:
            return
        data = encode({"type": ServerType.EVENT.value, "event": event.to_json()})
        for c in followers:
            c.send(data)

    def _on_log(self, offset: int, data: bytes) -> None:
        for c in [c for c in self.clients if c.log_offset is not None and not c.closed]:
            self._catch_up_log(c, live=(offset, data))

    def _catch_up_log(self, c: _Client, live: tuple[int, bytes] | None = None) -> None:
        """Send ``c`` the log from its offset onward: from ``live`` when it lines up, else from the file."""
        assert c.log_offset is not None
        for _ in range(64):  # at most 64 MiB of backlog per call; the rest follows with the next output
            chunk = self.engine.read_log(c.log_offset, 1024 * 1024)
            if chunk.next_offset <= c.log_offset:
                return
            c.send({"type": ServerType.LOG.value, "chunk": chunk.to_json()})
            c.log_offset = chunk.next_offset
            if c.closed or chunk.next_offset >= chunk.size:
                return

    # ---------------------------------------------------------------------------- a client
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = peer_credentials(sock)
        except OSError:
            writer.transport.abort()
            return
        client = _Client(self, reader, writer, pid)
        writer_task = asyncio.ensure_future(client.write_loop())
        if uid != os.getuid():
            log.warning("refused a connection from uid %s (pid %s)", uid, pid)
            client.error_and_close(ErrorCode.FORBIDDEN, f"uid {uid} may not control this engine (it belongs to uid {os.getuid()})")
            await _settle(writer_task)
            return
        if len(self.clients) >= self.max_clients:
            client.error_and_close(ErrorCode.TOO_MANY_CLIENTS, f"this engine already has {self.max_clients} clients; close some")
            await _settle(writer_task)
            return
        self.clients.add(client)
        try:
            engine_info = self.engine.info
            client.send(Hello(PROTOCOL_VERSION, f"cachewatch {__version__}", "server", engine=engine_info,
                              commands=tuple(COMMANDS)).to_json())
            await self._read_loop(client)
        finally:
            self.clients.discard(client)
            self._recount()
            if not client.close_after_flush:
                client.abort()
            await _settle(writer_task)

    async def _read_loop(self, c: _Client) -> None:
        greeted = False
        while not c.closed and not c.close_after_flush:
            try:
                if greeted:
                    line = await c.reader.readline()
                else:
                    line = await asyncio.wait_for(c.reader.readline(), self.hello_timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                c.error_and_close(ErrorCode.HELLO_REQUIRED, f"no hello within {self.hello_timeout_s:g}s")
                return
            except (ValueError, asyncio.LimitOverrunError):
                # StreamReader refuses the line without buffering it whole.
                c.error_and_close(ErrorCode.LINE_TOO_LONG, f"a message is longer than {MAX_REQUEST_BYTES} bytes; closing")
                return
            except (ConnectionError, OSError):
                return
            if not line:
                return  # the client went away
            if not line.strip():
                continue
            try:
                msg = decode_line(line)
            except ProtocolError as exc:
                c.error_and_close(ErrorCode.BAD_JSON, str(exc))
                return
            mtype = msg["type"]
            rid = msg.get("id")
            if not greeted:
                if mtype != ClientType.HELLO.value:
                    c.error_and_close(ErrorCode.HELLO_REQUIRED, f"send hello first (got {mtype!r})")
                    return
                try:
                    check_version(msg.get("protocol"), who="the client")
                except ProtocolError as exc:
                    c.error_and_close(ErrorCode.PROTOCOL_VERSION, str(exc))
                    return
                c.name = str(msg.get("client", ""))[:100]
                greeted = True
                if rid is not None:
                    c.send(Response(rid, True, {"protocol": PROTOCOL_VERSION}).to_json())
                continue
            task = asyncio.ensure_future(self._dispatch(c, mtype, rid, msg))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _dispatch(self, c: _Client, mtype: str, rid: Any, msg: dict[str, Any]) -> None:
        try:
            result = await self._answer(c, mtype, msg)
        except CommandFailed as exc:
            c.send(Response(rid, False, error=ErrorInfo(exc.code, str(exc))).to_json())
        except _BadRequest as exc:
            c.send(Response(rid, False, error=ErrorInfo(exc.code.value, str(exc))).to_json())
        except Exception as exc:  # a bug in one request must not end the engine or the connection
            log.exception("request %r failed", mtype)
            c.send(Response(rid, False, error=ErrorInfo(ErrorCode.FAILED.value, f"{type(exc).__name__}: {exc}")).to_json())
        else:
            c.send(Response(rid, True, result).to_json())
            if mtype == ClientType.SUBSCRIBE.value:
                self._after_subscribe(c, msg)
        finally:
            self._recount()

    async def _answer(self, c: _Client, mtype: str, msg: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        if mtype == ClientType.PING.value:
            return {"pong": True}
        if mtype == ClientType.SNAPSHOT.value:
            return self.engine.snapshot().to_json()
        if mtype == ClientType.SUBSCRIBE.value:
            interval = msg.get("interval_s", 0.0)
            if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval <= 3600:
                raise _BadRequest(ErrorCode.BAD_ARGS, "'interval_s' must be a number of seconds from 0 to 3600")
            c.snapshot_interval_s = float(interval)
            c.snapshots = bool(msg.get("snapshots", True))
            c.events = bool(msg.get("events", False))
            kinds = msg.get("kinds")
            c.event_kinds = tuple(str(k) for k in kinds) if isinstance(kinds, list) else None
            return {"snapshots": c.snapshots, "events": c.events, "log": msg.get("log", False), "interval_s": c.snapshot_interval_s}
        if mtype == ClientType.UNSUBSCRIBE.value:
            c.snapshots, c.events, c.log_offset = False, False, None
            return {}
        if mtype == ClientType.COMMAND.value:
            name = msg.get("name")
            args = msg.get("args") or {}
            if not isinstance(name, str):
                raise _BadRequest(ErrorCode.BAD_REQUEST, "a command needs a string 'name'")
            if not isinstance(args, dict):
                raise _BadRequest(ErrorCode.BAD_ARGS, "'args' must be an object")
            if name not in COMMANDS:
                raise _BadRequest(ErrorCode.UNKNOWN_COMMAND, f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
            return await loop.run_in_executor(self._executor, self.engine.execute, name, args)
        if mtype == ClientType.EVENTS.value:
            since, limit, kinds = msg.get("since"), msg.get("limit"), msg.get("kinds")
            if since is not None and not isinstance(since, (int, float)):
                raise _BadRequest(ErrorCode.BAD_ARGS, "'since' must be a time in seconds since the epoch")
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise _BadRequest(ErrorCode.BAD_ARGS, "'limit' must be a whole number >= 0")
            if kinds is not None and not (isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)):
                raise _BadRequest(ErrorCode.BAD_ARGS, "'kinds' must be a list of strings")
            events = await loop.run_in_executor(
                self._executor, lambda: self.engine.query_events(since=since, kinds=kinds, limit=limit if limit is not None else 1000)
            )
            if msg.get("follow"):
                c.events = True
                c.event_kinds = tuple(kinds) if kinds else None
            return {"events": [e.to_json() for e in events]}
        if mtype == ClientType.LOG.value:
            offset, max_bytes = msg.get("offset", -64 * 1024), msg.get("max_bytes", 64 * 1024)
            if not isinstance(offset, int) or not isinstance(max_bytes, int) or max_bytes <= 0:
                raise _BadRequest(ErrorCode.BAD_ARGS, "'offset' and 'max_bytes' must be whole numbers (max_bytes > 0)")
            chunk = self.engine.read_log(offset, max_bytes)
            if msg.get("follow"):
                c.log_offset = chunk.next_offset
            return chunk.to_json()
        if mtype == ClientType.HELLO.value:
            raise _BadRequest(ErrorCode.BAD_REQUEST, "hello was already exchanged")
        raise _BadRequest(ErrorCode.UNKNOWN_TYPE, f"unknown message type {mtype!r}; known: {', '.join(t.value for t in ClientType)}")

    def _after_subscribe(self, c: _Client, msg: dict[str, Any]) -> None:
        # Right after the ok: the current snapshot, so a client never waits a full interval.
        if c.snapshots:
            c.send_snapshot(self._snapshot_bytes(self.engine.snapshot()))
        if msg.get("log"):
            offset = msg.get("log_offset")
            size = self.engine.read_log(0, 1).size
            c.log_offset = size if not isinstance(offset, int) else (max(0, size + offset) if offset < 0 else offset)
            self._catch_up_log(c)


class _BadRequest(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


async def _settle(task: asyncio.Task[Any]) -> None:
    try:
        await asyncio.wait_for(task, 5)
    except (asyncio.TimeoutError, TimeoutError, asyncio.CancelledError):
        task.cancel()
    except Exception:
        pass


async def _wait_closed(c: _Client) -> None:
    while not c.closed:
        await asyncio.sleep(0.02)
