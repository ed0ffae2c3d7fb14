"""The reading side of a fleet: what ``cachewatch fleet`` and the fleet screen show.

:meth:`FleetReader.read` is one pipelined round trip: the server's ``TIME``, the heartbeat
set, and the summaries of the engines known from the previous read (an engine that just
joined shows from the next refresh on; :meth:`read` with ``complete=True`` fetches it at once).
An engine whose heartbeat is older than 2 of its intervals, or whose summary expired, is
*lost*, with the time of its last heartbeat; Redis unreachable gives a view that says so and
holds no rows, so nothing stale is ever shown as fresh.

:class:`RemoteEngine` is one engine seen through Redis: the full snapshot and the training
output while someone drills down, and commands through its command stream.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config import FleetConfig
from ..daemon.errors import CommandFailed
from ..daemon.snapshot import EngineSnapshot
from .connect import connect, redacted
from .keys import FleetKeys, split_engine_id
from .summary import FleetSummary

__all__ = ["FleetRow", "FleetView", "FleetReader", "RemoteEngine", "LOST_AFTER_INTERVALS", "prometheus_targets"]

# Lost when the heartbeat is older than this many intervals: one late heartbeat is tolerated,
# and a screen refreshing once an interval shows a killed engine lost within 3 intervals.
LOST_AFTER_INTERVALS = 2.0
WATCH_TTL_MS = 5000


@dataclass(frozen=True)
class FleetRow:
    id: str  # host/name
    host: str
    name: str
    last_beat: float  # server time of the last heartbeat
    age_s: float  # how long ago, by the server's clock
    summary: FleetSummary | None  # None: expired (lost) or not read yet
    lost: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "name": self.name, "last_beat": self.last_beat,
                "age_s": round(self.age_s, 3), "lost": self.lost,
                "summary": None if self.summary is None else self.summary.to_json()}


@dataclass(frozen=True)
class FleetView:
    url: str  # without password
    time: float  # the server's time of this read (0 when unreachable)
    rows: tuple[FleetRow, ...] = ()
    error: str | None = None  # "Redis unreachable: ..."; rows are then empty

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "time": self.time, "error": self.error, "engines": [r.to_json() for r in self.rows]}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _RedisHandle:
    """A Redis client made at first use and dropped at close; ``_block_s``: the longest blocking
    read it will issue (see :func:`connect`)."""

    cfg: FleetConfig
    _r: Any
    _block_s: float = 0.0

    @property
    def redis(self) -> Any:
        if self._r is None:
            self._r = connect(self.cfg, block_s=self._block_s)
        return self._r

    def close(self) -> None:
        if self._r is not None:
            try:
                self._r.close()
            except Exception:
                pass  # closing a client whose server is gone is not an error
            self._r = None


class FleetReader(_RedisHandle):
    """Reads a fleet. Not thread-safe: one per polling thread."""

    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        self.url = redacted(cfg.url or "")
        self.keys = FleetKeys(cfg.prefix)
        self._r: Any = None
        self._known: list[str] = []
        self.round_trips = 0  # for the benchmark: one per read() once the fleet is known


    def read(self, *, complete: bool = False) -> FleetView:
        try:
            return self._read(complete)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self.close()
            return FleetView(self.url, 0.0, (), error=f"Redis unreachable at {self.url}: {type(exc).__name__}: {exc}")

    def _read(self, complete: bool) -> FleetView:
        known = list(self._known)
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(self.keys.engines, 0, -1, withscores=True)
        if known:
            pipe.mget([self.keys.summary(i) for i in known])
        res = pipe.execute()
        self.round_trips += 1
        sec, usec = res[0]
        now = sec + usec / 1e6
        beats = [(_s(m), float(score)) for m, score in res[1]]
        summaries: dict[str, bytes | None] = dict(zip(known, res[2])) if known else {}
        missing = [i for i, _ in beats if i not in summaries]
        if missing and complete:
            for i, raw in zip(missing, self.redis.mget([self.keys.summary(i) for i in missing])):
                summaries[i] = raw
            self.round_trips += 1
        self._known = [i for i, _ in beats]
        rows = []
        for eid, score in beats:
            host, name = split_engine_id(eid)
            raw = summaries.get(eid)
            summary = None
            if raw is not None:
                try:
                    summary = FleetSummary.from_json(json.loads(raw))
                except (ValueError, TypeError, KeyError):
                    summary = None
            age = max(0.0, now - score)
            interval = summary.interval_s if summary is not None else None
            lost = (eid in summaries and summary is None) or (interval is not None and age > LOST_AFTER_INTERVALS * interval)
            if lost:
                summary = None  # a summary older than its engine's heartbeat window is not shown as current
            if not lost and summary is None and eid not in summaries:
                pass  # joined since the last read: shown (as "joining") until the next read brings its summary
            rows.append(FleetRow(eid, host, name, score, age, summary, lost))
        return FleetView(self.url, now, tuple(rows))

    def engine(self, eid: str) -> "RemoteEngine":
        return RemoteEngine(self.cfg, eid)


def _is_redis_error(exc: BaseException) -> bool:
    try:
        import redis
    except ImportError:  # pragma: no cover
        return isinstance(exc, OSError)
    return isinstance(exc, (redis.RedisError, OSError))


@dataclass(frozen=True)
class RemotePoll:
    snapshot: EngineSnapshot | None
    output: tuple[str, ...] = ()  # decoded chunks, in order
    output_reset: bool = False
    error: str | None = None
    accept_commands: bool = False


@dataclass
class RemoteEngine(_RedisHandle):
    """One engine through Redis (the drill-down). Not thread-safe: one poller, one commander."""

    _block_s = 60.0  # it waits on the engine's reply stream (a class attribute, not a field)
    cfg: FleetConfig
    id: str
    _r: Any = None
    _last_output: str = "0-0"
    _first: bool = True
    _accept: bool = False
    _interval_s: float = 1.0
    timeouts: dict[str, float] = field(default_factory=dict)

    @property
    def keys(self) -> FleetKeys:
        return FleetKeys(self.cfg.prefix)


    def poll(self) -> RemotePoll:
        k = self.keys
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(k.watching(self.id), "1", px=WATCH_TTL_MS)  # asks the engine for its full snapshot
            pipe.time()
            pipe.zscore(k.engines, self.id)
            pipe.get(k.summary(self.id))
            pipe.get(k.snapshot(self.id))
            pipe.xrange(k.output(self.id), min=f"({self._last_output}" if self._last_output != "0-0" else "-", max="+", count=500)
            _, (sec, usec), score, raw_summary, raw_snap, out = pipe.execute()
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self.close()
            return RemotePoll(None, error=f"Redis unreachable at {redacted(self.cfg.url or '')}: {type(exc).__name__}: {exc}")
        now = sec + usec / 1e6
        if raw_summary is not None:
            try:
                s = FleetSummary.from_json(json.loads(raw_summary))
                self._accept, self._interval_s = s.accept_commands, s.interval_s
            except (ValueError, TypeError, KeyError):
                pass
        if score is None:
            return RemotePoll(None, error=f"engine {self.id} is not in the fleet (stopped, or never published)")
        age = now - float(score)
        if raw_summary is None or age > LOST_AFTER_INTERVALS * self._interval_s:
            when = time.strftime("%H:%M:%S", time.localtime(float(score)))
            return RemotePoll(None, error=f"engine {self.id} lost: last heartbeat {age:.0f}s ago (at {when})")
        snap = None
        if raw_snap is not None:
            try:
                snap = EngineSnapshot.from_json(json.loads(raw_snap))
            except (ValueError, TypeError, KeyError) as exc:
                return RemotePoll(None, error=f"engine {self.id}: unreadable snapshot ({exc})")
        chunks: list[str] = []
        reset = self._first
        for entry_id, fields in out:
            self._last_output = _s(entry_id)
            f = {_s(a): b for a, b in fields.items()}
            if f.get("reset"):
                chunks, reset = [], True
            chunks.append(f.get("d", b"").decode(errors="replace") if isinstance(f.get("d"), bytes) else str(f.get("d", "")))
        if snap is not None:
            self._first = False
        error = None if snap is not None else f"waiting for engine {self.id} to publish its snapshot"
        return RemotePoll(snap, tuple(chunks), reset and snap is not None, error, self._accept)

    def command(self, name: str, args: Mapping[str, Any], *, timeout_s: float = 60.0) -> Any:
        """Send a command; the engine's JSON result, or :class:`CommandFailed` (refused, unreachable, no answer)."""
        k = self.keys
        try:
            r = self.redis
            raw = r.get(k.summary(self.id))
            if raw is None:
                raise CommandFailed(f"{name}: engine {self.id} is not publishing (lost or stopped)", "unavailable")
            summary = FleetSummary.from_json(json.loads(raw))
            if not summary.accept_commands:
                raise CommandFailed(
                    f"{name}: engine {self.id} does not accept commands through Redis; set [fleet] accept_commands = true "
                    "in its cachewatch.toml (see docs/fleet.md, Security) or run the command on that machine", "forbidden")
            request = uuid.uuid4().hex
            reply = k.reply(self.id, request)
            sec, usec = r.time()
            r.xadd(k.commands(self.id), {"request": request, "name": name, "args": json.dumps(dict(args)),
                                         "sent": repr(sec + usec / 1e6)}, maxlen=100, approximate=True)
            got = r.xread({reply: "0-0"}, count=1, block=int(timeout_s * 1000))
        except CommandFailed:
            raise
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self.close()
            raise CommandFailed(f"{name}: Redis unreachable at {redacted(self.cfg.url or '')} ({exc})", "unavailable") from None
        if not got:
            raise CommandFailed(f"{name}: engine {self.id} did not answer within {timeout_s:g}s", "unavailable")
        _stream, entries = got[0]
        answer = json.loads(entries[0][1][b"a"] if b"a" in entries[0][1] else entries[0][1]["a"])
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise CommandFailed(str(err.get("message", "refused")), str(err.get("code", "failed")))
        return answer.get("result")


def prometheus_targets(view: FleetView) -> list[dict[str, Any]]:
    """File-based service discovery (``file_sd_configs``) for the engines' metrics endpoints."""
    from urllib.parse import urlsplit

    out: list[dict[str, Any]] = []
    for row in view.rows:
        s = row.summary
        if row.lost or s is None or not s.metrics_url:
            continue
        u = urlsplit(s.metrics_url)
        host = u.hostname or s.host
        if host in ("0.0.0.0", "::", ""):
            host = s.host  # bound to every interface: reachable by the machine's name
        target = f"[{host}]:{u.port}" if ":" in host else f"{host}:{u.port}"
        labels: dict[str, str] = {"cachewatch_host": s.host, "cachewatch_engine": s.name}
        if u.path and u.path not in ("/", "/metrics"):
            labels["__metrics_path__"] = u.path
        out.append({"targets": [target], "labels": labels})
    out.sort(key=lambda t: str(t["targets"][0]))
    return out
