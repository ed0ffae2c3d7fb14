"""The engine's side of the fleet: heartbeat, summary, events, and (opt-in) remote commands.

Two daemon threads per engine, each with its own Redis connection:

``fleet-publish``
    every ``[fleet] interval``: one ``TIME`` (the server's clock scores the heartbeat), then
    one pipeline: ``ZADD`` heartbeat, ``SET`` summary with a TTL of 3 intervals, ``XADD`` the
    events gathered since, ``EXISTS`` the drill-down flag (and, while someone drills down,
    the full snapshot and the new training output).
``fleet-commands``
    only with ``accept_commands = true``: ``XREAD BLOCK`` on this engine's command stream;
    each command goes through :meth:`Engine.execute`, the same dispatch (and argument checks)
    as the local socket, and the answer goes to a reply stream that expires.

Redis down or restarted: the training never notices (nothing here runs in its path; events
wait in a bounded queue). The first failure logs one warning; the threads retry with a
doubling delay and log once more when Redis is back, then publish everything again
(a restarted Redis has lost the keys; the next heartbeat recreates them).
"""

from __future__ import annotations

import collections
import json
import logging
import socket
import threading
import time
from typing import Any

from ..config import FleetConfig
from ..events import Event
from .connect import connect, redacted
from .keys import REQUEST_RE, FleetKeys, engine_id
from .summary import FleetSummary

__all__ = ["FleetPublisher", "start_fleet", "EVENTS_MAXLEN", "COMMAND_MAX_AGE_S"]

log = logging.getLogger("cachewatch.fleet")

EVENTS_MAXLEN = 1000  # per engine; approximate trimming (MAXLEN ~) costs nothing extra
OUTPUT_MAXLEN = 200  # output chunks kept for a drill-down viewer
_QUEUE_MAX = 2000  # events kept while Redis is away; older ones are dropped (counted)
_OUTPUT_MAX_BYTES = 256 * 1024
COMMAND_MAX_AGE_S = 30.0  # a command that waited longer (Redis down, engine busy) is refused, not run late
REPLY_TTL_S = 120
_PRUNE_AFTER_S = 24 * 3600  # heartbeats older than this leave the sorted set


def _dumps(value: Any) -> str:
    # NaN is not JSON for most readers; an odd value becomes a string rather than a broken key.
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        from ..daemon.protocol import _finite

        return json.dumps(_finite(value), separators=(",", ":"), default=str)


class FleetPublisher:
    """Publishes one :class:`~cachewatch.engine.daemon.engine.Engine` to a fleet. :meth:`start`, :meth:`close`."""

    def __init__(self, engine: Any, cfg: FleetConfig) -> None:
        self.engine = engine
        self.cfg = cfg
        self.keys = FleetKeys(cfg.prefix)
        self.host = cfg.host or socket.gethostname()
        self.id = engine_id(self.host, engine.name)
        self.interval_s = float(cfg.interval)
        self.backoff_max_s = min(30.0, max(1.0, 10 * self.interval_s))
        self._events: collections.deque[Event] = collections.deque(maxlen=_QUEUE_MAX)
        self._events_dropped = 0
        self._output: list[tuple[int, bytes]] = []
        self._output_bytes = 0
        self._out_lock = threading.Lock()
        self._watched = False
        self._send_tail = False  # a viewer just arrived: send the end of the log first
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._removers: list[Any] = []
        self._down = False
        self._down_lock = threading.Lock()
        self.beats = 0  # successful heartbeats (tests, benchmark)
        self.commands_run = 0

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> "FleetPublisher":
        self._removers.append(self.engine.add_event_listener(self._on_event))
        self._removers.append(self.engine.add_log_listener(self._on_output))
        targets = [("fleet-publish", self._publish_loop)]
        if self.cfg.accept_commands:
            targets.append(("fleet-commands", self._command_loop))
        for name, fn in targets:
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("fleet: publishing engine %s to %s every %gs (remote commands %s)", self.id, redacted(self.cfg.url or ""),
                 self.interval_s, "accepted" if self.cfg.accept_commands else "refused")
        return self

    def close(self, *, timeout_s: float = 3.0) -> None:
        """Stop publishing and leave the fleet (a clean stop is not shown as lost)."""
        self._stop.set()
        for remove in self._removers:
            remove()
        for t in self._threads:
            t.join(timeout_s)
        try:
            r = connect(self.cfg, timeout_s=1.0)
            pipe = r.pipeline(transaction=False)
            self._add_events(pipe)
            pipe.zrem(self.keys.engines, self.id)
            pipe.delete(self.keys.summary(self.id), self.keys.snapshot(self.id))
            pipe.execute()
            r.close()
        except Exception as exc:  # Redis away: the heartbeat simply stops and the fleet shows it lost
            log.debug("fleet: could not leave the fleet cleanly: %s", exc)

    # ---------------------------------------------------------------------------- listeners
    def _on_event(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self._events_dropped += 1
        self._events.append(event)

    def _on_output(self, offset: int, data: bytes) -> None:
        if not self._watched:
            return  # nobody drills down into this engine: output stays local
        with self._out_lock:
            self._output.append((offset, data))
            self._output_bytes += len(data)
            while self._output_bytes > _OUTPUT_MAX_BYTES and len(self._output) > 1:
                _, old = self._output.pop(0)
                self._output_bytes -= len(old)

    # ------------------------------------------------------------------------ publish thread
    def _failed(self, exc: BaseException) -> None:
        with self._down_lock:
            if self._down:
                return
            self._down = True
        log.warning("fleet: Redis at %s is unreachable (%s: %s); the training is not affected; retrying with back-off",
                    redacted(self.cfg.url or ""), type(exc).__name__, exc)

    def _recovered(self) -> None:
        with self._down_lock:
            if not self._down:
                return
            self._down = False
        log.info("fleet: Redis at %s is reachable again; publishing engine %s", redacted(self.cfg.url or ""), self.id)

    def _publish_loop(self) -> None:
        r: Any = None
        delay = self.interval_s
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                if r is None:
                    r = connect(self.cfg)
                self.beat(r)
            except Exception as exc:  # redis errors, OSError, a bad snapshot: never out of this thread
                self._failed(exc)
                if r is not None:
                    try:
                        r.close()
                    except Exception:
                        pass
                r = None
                self._stop.wait(delay)
                delay = min(self.backoff_max_s, delay * 2)
                next_beat = 0.0
                continue
            self._recovered()
            delay = self.interval_s
            # Fixed rate, not "interval after the work": heartbeats stay one interval apart, which
            # keeps a live engine well inside the reader's lost threshold.
            next_beat = max(next_beat + self.interval_s, time.monotonic()) if next_beat else time.monotonic() + self.interval_s
            self._stop.wait(max(0.0, next_beat - time.monotonic()))
        if r is not None:
            try:
                r.close()
            except Exception:
                pass

    def beat(self, r: Any) -> None:
        """One heartbeat: two round trips (TIME, then one pipeline)."""
        sec, usec = r.time()
        now = sec + usec / 1e6
        snap = self.engine.snapshot()
        summary = FleetSummary.from_snapshot(snap, host=self.host, accept_commands=self.cfg.accept_commands,
                                             interval_s=self.interval_s)
        ttl_ms = max(1, int(3 * self.interval_s * 1000))
        pipe = r.pipeline(transaction=False)
        pipe.zadd(self.keys.engines, {self.id: now})
        pipe.set(self.keys.summary(self.id), _dumps(summary.to_json()), px=ttl_ms)
        sent = self._add_events(pipe)
        if self._watched:
            pipe.set(self.keys.snapshot(self.id), _dumps(snap.to_json()), px=ttl_ms)
            self._add_output(pipe, ttl_ms)
        if self.beats % 60 == 0:
            pipe.zremrangebyscore(self.keys.engines, "-inf", now - _PRUNE_AFTER_S)
        pipe.exists(self.keys.watching(self.id))
        try:
            results = pipe.execute()
        except Exception:
            for e in reversed(sent):  # not lost: they go with the next heartbeat
                self._events.appendleft(e)
            raise
        watched = bool(results[-1])
        if watched and not self._watched:
            self._send_tail = True
        self._watched = watched
        self.beats += 1

    def _add_events(self, pipe: Any) -> list[Event]:
        sent: list[Event] = []
        while self._events and len(sent) < 500:
            sent.append(self._events.popleft())
        key = self.keys.events(self.id)
        if self._events_dropped:
            pipe.xadd(key, {"e": _dumps({"kind": "fleet.events_lost", "time": time.time(),
                                          "fields": {"count": self._events_dropped}})},
                      maxlen=EVENTS_MAXLEN, approximate=True)
            self._events_dropped = 0
        for e in sent:
            pipe.xadd(key, {"e": _dumps(e.to_json())}, maxlen=EVENTS_MAXLEN, approximate=True)
        return sent

    def _add_output(self, pipe: Any, ttl_ms: int) -> None:
        key = self.keys.output(self.id)
        if self._send_tail:
            self._send_tail = False
            chunk = self.engine.read_log(-16 * 1024, 16 * 1024)
            with self._out_lock:
                self._output = [(o, d) for o, d in self._output if o >= chunk.next_offset]
                self._output_bytes = sum(len(d) for _, d in self._output)
            pipe.delete(key)
            pipe.xadd(key, {"o": chunk.offset, "d": chunk.data.encode(), "reset": 1}, maxlen=OUTPUT_MAXLEN, approximate=True)
        with self._out_lock:
            pending, self._output, self._output_bytes = self._output, [], 0
        for offset, data in pending:
            pipe.xadd(key, {"o": offset, "d": data}, maxlen=OUTPUT_MAXLEN, approximate=True)
        pipe.pexpire(key, max(ttl_ms, 60_000))

    # ------------------------------------------------------------------------ command thread
    def _command_loop(self) -> None:
        r: Any = None
        last = "$"  # only commands sent from now on: an old one must not run when an engine starts
        delay = self.interval_s
        key = self.keys.commands(self.id)
        while not self._stop.is_set():
            try:
                if r is None:
                    r = connect(self.cfg, block_s=1.0)
                    if last == "$":
                        info = r.xinfo_stream(key) if r.exists(key) else None
                        last = info["last-generated-id"] if info else "0-0"
                        if isinstance(last, bytes):
                            last = last.decode()
                got = r.xread({key: last}, count=10, block=1000)
            except Exception as exc:
                self._failed(exc)
                r = None
                self._stop.wait(delay)
                delay = min(self.backoff_max_s, delay * 2)
                continue
            delay = self.interval_s
            for _stream, entries in got or ():
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    try:
                        self._run_command(r, fields)
                    except Exception as exc:
                        self._failed(exc)
                        r = None
                        break

    def _run_command(self, r: Any, fields: dict[Any, Any]) -> None:
        from ..daemon.errors import CommandFailed
        from ..daemon.protocol import ErrorCode

        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode(errors="replace") if isinstance(v, bytes) else v)
             for k, v in fields.items()}
        request = str(f.get("request", ""))
        if not REQUEST_RE.match(request):
            log.warning("fleet: ignored a command without a usable request id")
            return
        reply = self.keys.reply(self.id, request)
        answer: dict[str, Any]
        try:
            name = f.get("name")
            try:
                args = json.loads(f.get("args") or "{}")
                sent = float(f.get("sent", 0))
            except ValueError:
                raise CommandFailed("a command needs JSON 'args' and a numeric 'sent' time", ErrorCode.BAD_REQUEST.value) from None
            if not isinstance(name, str):
                raise CommandFailed("a command needs a string 'name'", ErrorCode.BAD_REQUEST.value)
            if not isinstance(args, dict):
                raise CommandFailed("'args' must be an object", ErrorCode.BAD_ARGS.value)
            sec, usec = r.time()
            age = sec + usec / 1e6 - sent
            if age > COMMAND_MAX_AGE_S:
                raise CommandFailed(f"{name}: sent {age:.0f}s ago, older than {COMMAND_MAX_AGE_S:g}s; not run late, send it again",
                                    ErrorCode.CONFLICT.value)
            log.info("fleet: running remote command %s %s (request %s)", name, args, request)
            # The engine's own dispatch: same command table, same argument checks as the socket.
            result = self.engine.execute(name, args)
            answer = {"ok": True, "result": result}
            self.commands_run += 1
        except CommandFailed as exc:
            answer = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # a bug in one command must not end the command thread
            log.exception("fleet: remote command failed")
            answer = {"ok": False, "error": {"code": "failed", "message": f"{type(exc).__name__}: {exc}"}}
        pipe = r.pipeline(transaction=False)
        pipe.xadd(reply, {"a": _dumps(answer)})
        pipe.expire(reply, REPLY_TTL_S)
        pipe.execute()


def start_fleet(engine: Any, cfg: FleetConfig) -> FleetPublisher | None:
    """The publisher for ``engine`` when ``[fleet] url`` is set (None otherwise). Never raises for
    Redis being away; raises :class:`ConfigError` only when redis-py is missing."""
    if cfg.url is None:
        return None
    connect(cfg)  # redis-py present and the URL parses, or one clear error now
    return FleetPublisher(engine, cfg).start()
