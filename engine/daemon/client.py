"""Clients of the engine's control socket: a blocking one (CLI, scripts) and an asyncio one
(the dashboard).

Both do the handshake on connect, match responses to requests by ``id``, and hand pushed
messages (``SnapshotPush``, ``EventPush``, ``LogPush``, ``Bye``) to the caller typed.
Closing a client, or killing the process that holds one, never affects the engine or the
training.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Literal, Sequence, overload

from .._version import __version__
from ..events import Event
from . import runtime
from .errors import CommandFailed, ConnectionLost, ProtocolError
from .protocol import (
    MAX_PUSH_BYTES,
    PROTOCOL_VERSION,
    Bye,
    ClientType,
    Hello,
    LogChunk,
    Response,
    ServerError,
    check_version,
    decode_line,
    encode,
    parse_server_message,
)
from .results import AlertResult, CommandResult, EvictResult, JobResult, StopResult, TrainingResult, decode_result
from .snapshot import EngineSnapshot

__all__ = ["EngineClient", "AsyncEngineClient", "connect"]

# Command names by result type, so ``client.command("pause").training`` type-checks.
_TrainingCommand = Literal["pause", "resume", "restart", "start"]
_JobCommand = Literal["verify", "build", "split", "cancel_job"]


def _hello_message(client_name: str) -> dict[str, Any]:
    return {"type": ClientType.HELLO.value, "protocol": PROTOCOL_VERSION, "software": f"cachewatch {__version__}",
            "role": "client", "client": client_name}


def _check_server_hello(msg: Any) -> Hello:
    if isinstance(msg, ServerError):
        raise ProtocolError(f"the engine refused the connection: {msg.error.message}")
    if not isinstance(msg, Hello):
        raise ProtocolError("the engine did not start with a hello; is this a cachewatch socket?")
    check_version(msg.protocol, who="the engine")
    return msg


def _result(resp: Response) -> Any:
    if resp.ok:
        return resp.result
    assert resp.error is not None
    raise CommandFailed(resp.error.message, resp.error.code)


def connect(name: str | None = None, *, config_path: str | os.PathLike[str] | None = None, client_name: str = "cachewatch",
            timeout_s: float = 10.0) -> "EngineClient":
    """A connected :class:`EngineClient` to the engine called ``name`` (or the only/config's one)."""
    entry = runtime.find_engine(name, config_path=config_path)
    try:
        return EngineClient(entry.socket, client_name=client_name, timeout_s=timeout_s)
    except (ConnectionRefusedError, FileNotFoundError):
        raise ConnectionLost(f"engine {entry.name!r} (pid {entry.pid}) is not answering on {entry.socket}; it may be stopping") from None


class EngineClient:
    """Blocking client. Not thread-safe: use it from one thread (or guard it)."""

    def __init__(self, path: str | os.PathLike[str], *, client_name: str = "cachewatch", timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(os.fspath(self.path))
        except OSError:
            self._sock.close()
            raise
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._pushes: collections.deque[Any] = collections.deque()
        self._closed = False
        try:
            self.hello = _check_server_hello(self._read(timeout_s))
            self._send(_hello_message(client_name))
        except Exception:
            self.close()
            raise

    # ---------------------------------------------------------------------------- plumbing
    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.sendall(encode(message))
        except OSError as exc:
            raise ConnectionLost(f"the engine closed the connection ({exc.strerror or exc})") from None

    def _read(self, timeout: float | None) -> Any:
        """The next server message; ``None`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[: nl + 1])
                del self._buf[: nl + 1]
                return parse_server_message(decode_line(line))
            if len(self._buf) > MAX_PUSH_BYTES:
                raise ProtocolError(f"the engine sent a line longer than {MAX_PUSH_BYTES} bytes")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(256 * 1024)
            except (socket.timeout, TimeoutError):
                return None
            except OSError as exc:
                raise ConnectionLost(f"the engine connection broke ({exc.strerror or exc})") from None
            if not data:
                raise ConnectionLost("the engine closed the connection")
            self._buf += data

    def request(self, mtype: str, **fields: Any) -> Any:
        """Send one request and wait for its response; pushes that arrive meanwhile are kept."""
        rid = next(self._ids)
        self._send({"type": mtype, "id": rid, **fields})
        # A stop or restart waits for the training to exit (up to [run] stop_grace); do not give up first.
        deadline = time.monotonic() + max(self.timeout_s, 600.0 if mtype == ClientType.COMMAND.value else 0.0)
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise ConnectionLost(f"the engine did not answer {mtype!r} in time")
            if isinstance(msg, Response) and msg.id == rid:
                return _result(msg)
            if isinstance(msg, ServerError):
                raise CommandFailed(msg.error.message, msg.error.code)
            if isinstance(msg, Bye):
                raise ConnectionLost(f"the engine is going away ({msg.reason})")
            self._pushes.append(msg)

    # ------------------------------------------------------------------------------ requests
    def ping(self) -> bool:
        return bool(self.request(ClientType.PING.value).get("pong"))

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot.from_json(self.request(ClientType.SNAPSHOT.value))

    @overload
    def command(self, name: _TrainingCommand, **args: Any) -> TrainingResult: ...
    @overload
    def command(self, name: Literal["stop"], **args: Any) -> StopResult: ...
    @overload
    def command(self, name: Literal["dismiss_alert"], **args: Any) -> AlertResult: ...
    @overload
    def command(self, name: _JobCommand, **args: Any) -> JobResult: ...
    @overload
    def command(self, name: Literal["evict"], **args: Any) -> EvictResult: ...
    @overload
    def command(self, name: str, **args: Any) -> CommandResult: ...

    def command(self, name: str, **args: Any) -> CommandResult:
        """Run an engine command and return its typed result (see ``results.py``);
        :class:`CommandFailed` (with ``.code``) if the engine refuses."""
        return decode_result(name, self.request(ClientType.COMMAND.value, name=name, args=args))

    def subscribe(self, *, snapshots: bool = True, events: bool = False, kinds: Sequence[str] | None = None,
                  log: bool = False, log_offset: int | None = None, interval_s: float = 0.0) -> None:
        """Start the pushes: snapshots (at once, then on each change, at most one per ``interval_s``),
        events, training output."""
        fields: dict[str, Any] = {"snapshots": snapshots, "events": events, "log": log, "interval_s": interval_s}
        if kinds is not None:
            fields["kinds"] = list(kinds)
        if log_offset is not None:
            fields["log_offset"] = log_offset
        self.request(ClientType.SUBSCRIBE.value, **fields)

    def unsubscribe(self) -> None:
        self.request(ClientType.UNSUBSCRIBE.value)

    def events(self, *, since: float | None = None, kinds: Sequence[str] | None = None, limit: int | None = None,
               follow: bool = False) -> list[Event]:
        fields: dict[str, Any] = {"follow": follow}
        if since is not None:
            fields["since"] = since
        if kinds is not None:
            fields["kinds"] = list(kinds)
        if limit is not None:
            fields["limit"] = limit
        return [Event.from_json(e) for e in self.request(ClientType.EVENTS.value, **fields)["events"]]

    def log(self, offset: int = -64 * 1024, max_bytes: int = 64 * 1024, *, follow: bool = False) -> LogChunk:
        """Training output from ``offset`` (negative: from the end); ``follow`` pushes what comes next."""
        return LogChunk.from_json(self.request(ClientType.LOG.value, offset=offset, max_bytes=max_bytes, follow=follow))

    # --------------------------------------------------------------------------------- pushes
    def recv(self, timeout: float | None = None) -> Any:
        """The next pushed message (typed), or ``None`` after ``timeout`` seconds.

        Raises :class:`ConnectionLost` after a ``bye`` or when the engine goes away.
        """
        if self._pushes:
            msg = self._pushes.popleft()
        else:
            msg = self._read(timeout)
        if isinstance(msg, Bye):
            raise ConnectionLost(f"the engine is going away ({msg.reason})")
        if isinstance(msg, ServerError):
            raise CommandFailed(msg.error.message, msg.error.code)
        return msg

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.recv()
            except ConnectionLost:
                return

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PushHandler = Callable[[Any], "Awaitable[None] | None"]


class AsyncEngineClient:
    """asyncio client for the dashboard: one reader task, responses matched to futures,
    pushes handed to ``on_push`` (or queued in :attr:`pushes`).

    >>> client = await AsyncEngineClient.connect(entry.socket, on_push=app.post_snapshot)  # doctest: +SKIP
    >>> await client.subscribe(log=True)
    >>> await client.command("pause")
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: Hello,
                 on_push: PushHandler | None) -> None:
        self._reader = reader
        self._writer = writer
        self.hello = hello
        self._on_push = on_push
        self.pushes: asyncio.Queue[Any] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._task = asyncio.ensure_future(self._read_loop())
        self.closed = asyncio.Event()
        self.close_reason = ""

    @classmethod
    async def connect(cls, path: str | os.PathLike[str], *, client_name: str = "dashboard", on_push: PushHandler | None = None,
                      timeout_s: float = 10.0) -> "AsyncEngineClient":
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(os.fspath(path), limit=MAX_PUSH_BYTES), timeout_s)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout_s)
            if not line:
                raise ConnectionLost("the engine closed the connection during the handshake")
            hello = _check_server_hello(parse_server_message(decode_line(line)))
            writer.write(encode(_hello_message(client_name)))
            await writer.drain()
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, hello, on_push)

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    self.close_reason = self.close_reason or "the engine closed the connection"
                    return
                msg = parse_server_message(decode_line(line))
                if isinstance(msg, Response):
                    fut = self._waiting.pop(msg.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                    continue
                if isinstance(msg, Bye):
                    self.close_reason = msg.reason
                elif isinstance(msg, ServerError):
                    self.close_reason = msg.error.message
                if self._on_push is not None:
                    r = self._on_push(msg)
                    if asyncio.iscoroutine(r):
                        await r
                else:
                    self.pushes.put_nowait(msg)
        except (ConnectionError, OSError, ValueError, ProtocolError) as exc:
            self.close_reason = self.close_reason or f"connection broke ({exc})"
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(self.close_reason or "the engine closed the connection"))
            self._waiting.clear()
            self.closed.set()

    async def request(self, mtype: str, timeout_s: float | None = 60.0, **fields: Any) -> Any:
        if self.closed.is_set():
            raise ConnectionLost(self.close_reason or "the engine closed the connection")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self._writer.write(encode({"type": mtype, "id": rid, **fields}))
        await self._writer.drain()
        return _result(await asyncio.wait_for(fut, timeout_s))

    async def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot.from_json(await self.request(ClientType.SNAPSHOT.value))

    @overload
    async def command(self, name: _TrainingCommand, **args: Any) -> TrainingResult: ...
    @overload
    async def command(self, name: Literal["stop"], **args: Any) -> StopResult: ...
    @overload
    async def command(self, name: Literal["dismiss_alert"], **args: Any) -> AlertResult: ...
    @overload
    async def command(self, name: _JobCommand, **args: Any) -> JobResult: ...
    @overload
    async def command(self, name: Literal["evict"], **args: Any) -> EvictResult: ...
    @overload
    async def command(self, name: str, **args: Any) -> CommandResult: ...

    async def command(self, name: str, **args: Any) -> CommandResult:
        # A stop or restart waits for the training to exit (up to [run] stop_grace).
        return decode_result(name, await self.request(ClientType.COMMAND.value, timeout_s=600.0, name=name, args=args))

    async def subscribe(self, *, snapshots: bool = True, events: bool = False, log: bool = False,
                        log_offset: int | None = None, kinds: Sequence[str] | None = None, interval_s: float = 0.0) -> None:
        """As :meth:`EngineClient.subscribe`; a dashboard refreshing every second passes ``interval_s=1``."""
        fields: dict[str, Any] = {"snapshots": snapshots, "events": events, "log": log, "interval_s": interval_s}
        if log_offset is not None:
            fields["log_offset"] = log_offset
        if kinds is not None:
            fields["kinds"] = list(kinds)
        await self.request(ClientType.SUBSCRIBE.value, **fields)

    async def events(self, *, since: float | None = None, kinds: Sequence[str] | None = None,
                     limit: int | None = None) -> list[Event]:
        fields: dict[str, Any] = {}
        if since is not None:
            fields["since"] = since
        if kinds is not None:
            fields["kinds"] = list(kinds)
        if limit is not None:
            fields["limit"] = limit
        return [Event.from_json(e) for e in (await self.request(ClientType.EVENTS.value, **fields))["events"]]

    async def log(self, offset: int = -64 * 1024, max_bytes: int = 64 * 1024) -> LogChunk:
        return LogChunk.from_json(await self.request(ClientType.LOG.value, offset=offset, max_bytes=max_bytes))

    async def close(self) -> None:
        """Detach. The engine and the training go on."""
        self._task.cancel()
        try:
            self._writer.close()
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        self.closed.set()
