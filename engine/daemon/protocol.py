"""The engine's control protocol: newline-delimited JSON over a Unix stream socket.

Each message is one JSON object on one line (UTF-8, ``\\n``-terminated) with a ``type``.
The server speaks first (``hello``); the client answers with its own ``hello``; then the
client sends requests, each with an ``id`` the response repeats, and the server pushes
``snapshot`` / ``event`` / ``log`` messages for what the client subscribed to. See
``docs/engine.md`` for the full table.

Versioning: ``protocol`` is ``"MAJOR.MINOR"``. Peers with different majors refuse each other
with a ``protocol_version`` error; a higher minor only adds fields or messages, which older
peers ignore.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from ..events import Event
from .codec import frozen_map
from .errors import ProtocolError
from .snapshot import EngineInfo, EngineSnapshot

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_REQUEST_BYTES",
    "MAX_PUSH_BYTES",
    "ClientType",
    "ServerType",
    "ErrorCode",
    "CommandSpec",
    "COMMANDS",
    "Hello",
    "ErrorInfo",
    "Response",
    "LogChunk",
    "encode",
    "decode_line",
    "check_version",
    "parse_server_message",
]

PROTOCOL_VERSION = "1.0"
# A request is a few hundred bytes; anything near this limit is a bug or an attack.
MAX_REQUEST_BYTES = 64 * 1024
# Server lines: a snapshot of a busy engine is tens of KB, a log chunk up to 1 MiB of text
# escaped as JSON; clients accept up to this.
MAX_PUSH_BYTES = 16 * 1024 * 1024
LOG_CHUNK_MAX_BYTES = 1024 * 1024


class ClientType(str, Enum):
    """``type`` of the messages a client sends."""

    HELLO = "hello"
    PING = "ping"
    SNAPSHOT = "snapshot"  # one snapshot now, as the response
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    COMMAND = "command"
    EVENTS = "events"
    LOG = "log"


class ServerType(str, Enum):
    """``type`` of the messages the server sends."""

    HELLO = "hello"
    RESPONSE = "response"  # answers the request with the same id
    SNAPSHOT = "snapshot"  # pushed: a new snapshot (subscription)
    EVENT = "event"  # pushed: a new event (events follow)
    LOG = "log"  # pushed: new training output (log follow)
    BYE = "bye"  # the engine is going away; the connection closes after it
    ERROR = "error"  # a problem not tied to a request id (bad line, version); the server closes after it


class ErrorCode(str, Enum):
    BAD_JSON = "bad_json"
    LINE_TOO_LONG = "line_too_long"
    BAD_REQUEST = "bad_request"
    HELLO_REQUIRED = "hello_required"
    PROTOCOL_VERSION = "protocol_version"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    CONFLICT = "conflict"  # the command does not fit the state (pause with nothing running)
    UNAVAILABLE = "unavailable"  # the engine has no such part (no cache, no training, job not built in)
    FAILED = "failed"
    FORBIDDEN = "forbidden"  # another user
    TOO_MANY_CLIENTS = "too_many_clients"
    TOO_SLOW = "too_slow"  # the client did not read its messages; it is dropped


@dataclass(frozen=True)
class CommandSpec:
    """One engine command. The dashboard builds its key table from these ``name`` values."""

    name: str
    help: str
    args: Mapping[str, str] = field(default_factory=frozen_map)  # arg -> description
    destructive: bool = False  # clients ask before sending it
    long_running: bool = False  # answered at once with a job id; progress comes as events


COMMANDS: dict[str, CommandSpec] = {
    c.name: c
    for c in (
        CommandSpec("evict", "evict the managed cache down to its target, or to a size",
                    frozen_map({"to": "size to go down to ('80GB'); default: the target", "dry_run": "only report"}),
                    destructive=True),
        CommandSpec("pause", "pause the training (SIGSTOP to its whole process group)"),
        CommandSpec("resume", "resume a paused training (SIGCONT)"),
        CommandSpec("restart", "stop the training gracefully and start it again", destructive=True),
        CommandSpec("stop", "stop the training gracefully; with what='engine', the engine too",
                    frozen_map({"what": "'training' (default) or 'engine'"}), destructive=True),
        CommandSpec("start", "start the training again after it ended (same command)"),
        CommandSpec("dismiss_alert", "hide an alert", frozen_map({"alert_id": "id from the snapshot's alerts"})),
        CommandSpec("verify", "check the cache against its index and source", frozen_map({"repair": "fix what is found"}),
                    long_running=True),
        CommandSpec("build", "pre-build the cache from the source", long_running=True),
        CommandSpec("split", "split large batch files into smaller ones",
                    frozen_map({"input": "file or directory", "output": "directory", "traces_per_batch": "items per batch"}),
                    destructive=True, long_running=True),
        CommandSpec("push", "upload the cache to [cache] remote (only what is missing), then commit a manifest",
                    frozen_map({"url": "s3://bucket/prefix or a directory; default [cache] remote", "dry_run": "only report"}),
                    long_running=True),
        CommandSpec("pull", "fetch what the cache lacks from [cache] remote, every object verified",
                    frozen_map({"url": "s3://bucket/prefix or a directory; default [cache] remote", "dry_run": "only report"}),
                    long_running=True),
        CommandSpec("cancel_job", "cancel a running job", frozen_map({"job_id": "id from the snapshot's jobs"})),
    )
}


@dataclass(frozen=True)
class Hello:
    protocol: str
    software: str
    role: str  # "server" | "client"
    client: str = ""  # what the client is ("cachewatch status", "dashboard")
    engine: EngineInfo | None = None
    commands: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "hello", "protocol": self.protocol, "software": self.software, "role": self.role}
        if self.client:
            out["client"] = self.client
        if self.engine is not None:
            out["engine"] = self.engine.to_json()
        if self.commands:
            out["commands"] = list(self.commands)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Hello":
        engine = d.get("engine")
        return cls(
            protocol=str(d.get("protocol", "")),
            software=str(d.get("software", "")),
            role=str(d.get("role", "")),
            client=str(d.get("client", "")),
            engine=None if engine is None else EngineInfo.from_json(engine),
            commands=tuple(d.get("commands", ())),
        )


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Response:
    id: Any
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "response", "id": self.id, "ok": self.ok}
        if self.ok:
            out["result"] = self.result
        else:
            assert self.error is not None
            out["error"] = self.error.to_json()
        return out


@dataclass(frozen=True)
class LogChunk:
    """Training output from byte ``offset`` to ``next_offset`` of the log (``size`` is its length now).

    ``data`` is text; a multi-byte character cut by the chunk end is left for the next chunk,
    so ``next_offset`` may stop short of ``size``. ``\\r`` (tqdm redraws) is kept as written.
    """

    offset: int
    next_offset: int
    size: int
    data: str
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "next_offset": self.next_offset, "size": self.size, "data": self.data, "path": self.path}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LogChunk":
        return cls(int(d["offset"]), int(d["next_offset"]), int(d["size"]), str(d["data"]), str(d.get("path", "")))


def encode(message: Mapping[str, Any]) -> bytes:
    """One line of protocol: compact JSON plus ``\\n`` (JSON escapes any newline inside strings).

    NaN and infinities are not JSON; one that slips into a message (a diverged loss in an
    alert's figures) travels as the string ``"NaN"`` / ``"Infinity"`` rather than breaking it.
    """
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(message), separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    return (text + "\n").encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def decode_line(line: bytes) -> dict[str, Any]:
    """Parse one received line into a message object, or raise :class:`ProtocolError`."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON ({exc.__class__.__name__}: {exc}); send one JSON object per line") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a JSON object, not {type(message).__name__}")
    if not isinstance(message.get("type"), str):
        raise ProtocolError("a message needs a string field 'type'")
    return message


def check_version(theirs: Any, *, who: str = "peer") -> None:
    """Raise :class:`ProtocolError` when ``theirs`` cannot talk to :data:`PROTOCOL_VERSION`."""
    mine = PROTOCOL_VERSION.split(".")[0]
    if not isinstance(theirs, str) or not theirs.split(".")[0].isdigit():
        raise ProtocolError(f"{who} sent no usable protocol version ({theirs!r}); this side speaks {PROTOCOL_VERSION}")
    if theirs.split(".")[0] != mine:
        raise ProtocolError(
            f"{who} speaks protocol {theirs}, this side speaks {PROTOCOL_VERSION}; "
            "use the same major version of cachewatch on both sides (upgrade the older one)"
        )


# ------------------------------------------------------------------------ typed server pushes
@dataclass(frozen=True)
class SnapshotPush:
    snapshot: EngineSnapshot


@dataclass(frozen=True)
class EventPush:
    event: Event
    offset: int | None = None  # byte offset after this event in the engine's event log


@dataclass(frozen=True)
class LogPush:
    chunk: LogChunk


@dataclass(frozen=True)
class Bye:
    reason: str


@dataclass(frozen=True)
class ServerError:
    error: ErrorInfo


ServerMessage = Any  # one of the above, a Response, or a Hello


def parse_server_message(message: Mapping[str, Any]) -> Any:
    """A decoded server line as a typed value (clients use this; unknown types pass as dicts)."""
    t = message.get("type")
    if t == ServerType.SNAPSHOT.value:
        return SnapshotPush(EngineSnapshot.from_json(message["snapshot"]))
    if t == ServerType.EVENT.value:
        return EventPush(Event.from_json(message["event"]), message.get("offset"))
    if t == ServerType.LOG.value:
        return LogPush(LogChunk.from_json(message["chunk"]))
    if t == ServerType.RESPONSE.value:
        err = message.get("error")
        return Response(
            id=message.get("id"),
            ok=bool(message.get("ok")),
            result=message.get("result"),
            error=None if err is None else ErrorInfo(str(err.get("code", "")), str(err.get("message", ""))),
        )
    if t == ServerType.BYE.value:
        return Bye(str(message.get("reason", "")))
    if t == ServerType.ERROR.value:
        err = message.get("error") or {}
        return ServerError(ErrorInfo(str(err.get("code", "")), str(err.get("message", ""))))
    if t == ServerType.HELLO.value:
        return Hello.from_json(message)
    return dict(message)
