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
    "ArgSpec",
    "CommandSpec",
    "COMMANDS",
    "check_args",
    "MAX_DEPTH",
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
# A request is a flat object with a few scalar arguments; deeper nesting is refused at the
# line, before any code walks it recursively (Python's JSON parser itself stops near 1000).
MAX_DEPTH = 16


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


_ARG_TYPES = ("bool", "int", "str", "path", "size", "choice")
_TEXT_MAX = 4096  # a path or an id longer than this is not one


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a command: its JSON type, range and whether it must be given.

    ``type``: ``bool`` (true/false only), ``int`` (a whole number in ``[min, max]``), ``str``,
    ``path`` (a non-empty string without NUL), ``size`` (bytes as a number, or a string like
    ``"80GB"``; becomes a number), ``choice`` (one of ``choices``). ``needs``: the names of
    boolean arguments that must be true when this one is true (``delete_original`` needs
    ``confirmed``).
    """

    type: str
    help: str
    required: bool = False
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.type in _ARG_TYPES, self.type

    def check(self, name: str, value: Any) -> Any:
        """The value to use, or :class:`ValueError` with one line naming ``name`` and what fits."""
        t = self.type
        if t == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"argument {name!r} must be true or false, not {_show(value)}")
            return value
        if t == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"argument {name!r} must be a whole number, not {_show(value)}")
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ValueError(f"argument {name!r} = {value} is out of range; give {self.min} to {self.max}")
            return value
        if t == "size":
            from ..sizes import parse_size

            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError(f"argument {name!r} must be a size in bytes or a string like '80GB', not {_show(value)}")
            try:
                return parse_size(value, what=f"argument {name!r}")
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        if not isinstance(value, str):
            raise ValueError(f"argument {name!r} must be a string, not {_show(value)}")
        if "\x00" in value or len(value) > _TEXT_MAX:
            raise ValueError(f"argument {name!r} holds a NUL character or is longer than {_TEXT_MAX} characters")
        if t == "path" and not value.strip():
            raise ValueError(f"argument {name!r} must be a path, not an empty string")
        if t == "choice" and value not in self.choices:
            raise ValueError(f"argument {name!r} = {_show(value)} is not one of {', '.join(repr(c) for c in self.choices)}")
        return value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "help": self.help, "required": self.required}
        for k in ("min", "max"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.choices:
            out["choices"] = list(self.choices)
        if self.needs:
            out["needs"] = list(self.needs)
        return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class CommandSpec:
    """One engine command: the single table the engine validates arguments from and the
    dashboard builds its keys and confirmations from.

    ``destructive``: the command can stop the training or delete data (the help column;
    ``--readonly`` leaves it out); ``destructive_when`` / ``safe_when`` say which calls, by
    their arguments (see :meth:`is_destructive`); clients ask first exactly for those calls.
    ``long_running``: answered at once with a job id; the work runs as a job whose progress
    comes as events (the engine starts every such command through its job runner).
    """

    name: str
    help: str
    args: Mapping[str, ArgSpec] = field(default_factory=frozen_map)
    destructive: bool = False
    long_running: bool = False
    destructive_when: tuple[str, ...] = ()  # boolean arguments that make it destructive when true
    safe_when: tuple[str, ...] = ()  # boolean arguments that make it harmless when true (dry_run)

    def is_destructive(self, args: Mapping[str, Any] | None = None) -> bool:
        """Whether this call, with these arguments, stops something or deletes data.

        ``safe_when`` wins (an evict with ``dry_run``); a command with ``destructive_when`` is
        destructive only when one of those is true (a split deletes nothing unless told to
        delete the originals or overwrite parts); else ``destructive`` decides."""
        args = args or {}
        if any(args.get(a) is True for a in self.safe_when):
            return False
        if self.destructive_when:
            return any(args.get(a) is True for a in self.destructive_when)
        return self.destructive

    def check_args(self, args: Any) -> dict[str, Any]:
        """The arguments, checked and normalised, or :class:`ValueError` naming the first bad one."""
        if not isinstance(args, Mapping):
            raise ValueError(f"{self.name}: 'args' must be an object")
        unknown = sorted(str(k) for k in args if k not in self.args)
        if unknown:
            known = ", ".join(self.args) or "none"
            raise ValueError(f"{self.name}: unknown argument {_show(unknown[0])}; known: {known}")
        out: dict[str, Any] = {}
        for name, spec in self.args.items():
            if name not in args or args[name] is None:
                if spec.required:
                    raise ValueError(f"{self.name}: argument {name!r} is required ({spec.help})")
                continue
            try:
                out[name] = spec.check(name, args[name])
            except ValueError as exc:
                raise ValueError(f"{self.name}: {exc}") from None
        for name, spec in self.args.items():
            if out.get(name) is True:
                for need in spec.needs:
                    if out.get(need) is not True:
                        raise ValueError(f"{self.name}: argument {name!r} needs {need!r} = true ({self.args[need].help})")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "help": self.help, "destructive": self.destructive, "long_running": self.long_running,
                "destructive_when": list(self.destructive_when), "safe_when": list(self.safe_when),
                "args": {k: v.to_json() for k, v in self.args.items()}}


def _args(**specs: ArgSpec) -> Mapping[str, ArgSpec]:
    return frozen_map(specs)


_WORKERS = ArgSpec("int", "threads or processes to use", min=1, max=1024)
_ROOT = ArgSpec("path", "cache directory (default: [cache] root)")
_SOURCE = ArgSpec("path", "source directory (default: [source] dir)")

COMMANDS: dict[str, CommandSpec] = {
    c.name: c
    for c in (
        CommandSpec("evict", "evict the managed cache (or a watched directory) down to its target, or to a size",
                    _args(to=ArgSpec("size", "size to go down to ('80GB'); default: the target"),
                          dry_run=ArgSpec("bool", "only report what would go"),
                          root=ArgSpec("path", "which cache or watched directory (default: the managed cache)")),
                    destructive=True, safe_when=("dry_run",)),
        CommandSpec("pause", "pause the training (SIGSTOP to its whole process group)"),
        CommandSpec("resume", "resume a paused training (SIGCONT)"),
        CommandSpec("restart", "stop the training gracefully and start it again", destructive=True),
        CommandSpec("stop", "stop the training gracefully; with what='engine', the engine too",
                    _args(what=ArgSpec("choice", "'training' (default) or 'engine'", choices=("training", "engine"))),
                    destructive=True),
        CommandSpec("start", "start the training again after it ended (same command)"),
        CommandSpec("dismiss_alert", "hide an alert",
                    _args(alert_id=ArgSpec("str", "id from the snapshot's alerts", required=True))),
        CommandSpec("verify", "check the cache against its index and source; with repair, fix what is found",
                    _args(root=_ROOT, repair=ArgSpec("bool", "repair: drop or re-index what is wrong"),
                          quick=ArgSpec("bool", "sizes only, no hashing"), workers=_WORKERS, source=_SOURCE),
                    long_running=True, destructive_when=("repair",)),
        CommandSpec("build", "pre-build the cache from the source",
                    _args(root=_ROOT, workers=_WORKERS, source=_SOURCE), long_running=True),
        CommandSpec("split", "split large batch files into smaller ones",
                    _args(input=ArgSpec("path", "file or directory to split", required=True),
                          output=ArgSpec("path", "directory for the parts", required=True),
                          traces_per_batch=ArgSpec("int", "items per sub-batch (250)", min=1, max=10**9),
                          compress=ArgSpec("bool", "gzip the parts (default true)"),
                          compress_level=ArgSpec("int", "gzip level (6)", min=0, max=9),
                          validate=ArgSpec("bool", "read every part back before finishing (default true)"),
                          delete_original=ArgSpec("bool", "delete the inputs once their parts are validated",
                                                  needs=("confirmed",)),
                          confirmed=ArgSpec("bool", "the user said yes to deleting the originals"),
                          pattern=ArgSpec("str", "which files of a directory ('*.pkl*')"),
                          workers=_WORKERS,
                          overwrite=ArgSpec("bool", "replace existing parts"),
                          skip_existing=ArgSpec("bool", "skip inputs whose parts exist")),
                    destructive=True, long_running=True, destructive_when=("delete_original", "overwrite")),
        CommandSpec("push", "upload the cache to [cache] remote (only what is missing), then commit a manifest",
                    _args(url=ArgSpec("str", "s3://bucket/prefix or a directory; default [cache] remote"), root=_ROOT,
                          workers=_WORKERS, dry_run=ArgSpec("bool", "only report")),
                    long_running=True),
        CommandSpec("pull", "fetch what the cache lacks from [cache] remote, every object verified",
                    _args(url=ArgSpec("str", "s3://bucket/prefix or a directory; default [cache] remote"), root=_ROOT,
                          workers=_WORKERS, dry_run=ArgSpec("bool", "only report")),
                    long_running=True),
        CommandSpec("cancel_job", "cancel a running job",
                    _args(job_id=ArgSpec("str", "id from the snapshot's jobs", required=True))),
    )
}


def check_args(name: str, args: Any) -> dict[str, Any]:
    """``COMMANDS[name].check_args(args)``; :class:`ValueError` for an unknown command too."""
    spec = COMMANDS.get(name)
    if spec is None:
        raise ValueError(f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    return spec.check_args(args)


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
    except RecursionError:
        raise ProtocolError(f"JSON nested too deeply; a message nests at most {MAX_DEPTH} levels") from None
    if _depth(message) > MAX_DEPTH:
        raise ProtocolError(f"JSON nested too deeply; a message nests at most {MAX_DEPTH} levels")
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a JSON object, not {type(message).__name__}")
    if not isinstance(message.get("type"), str):
        raise ProtocolError("a message needs a string field 'type'")
    return message


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion (it may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((x, d + 1) for x in v)
    return deepest


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
