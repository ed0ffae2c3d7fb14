"""The engine: owns the managed cache and the training, and publishes immutable snapshots.

One :class:`Engine` composes the supervisor, the samplers (GPU, process tree, host), the
progress tracker, the alerts, the maintenance jobs and the event log. It runs the same way
inside a headless daemon (``cachewatch run --headless``), in the foreground, or inside a
dashboard process; the socket server is a separate layer on top (``server.py``).

Threads, and why:

``engine-loop``
    tails the training log, the progress file and the cache's event file (a few ``fstat``
    calls every ``tail_interval_s``), checks thresholds once per sampling interval and
    publishes a snapshot when something changed, at most every ``min_publish_s``. It never
    blocks on the cache or on a sampler.
``cache-sampler``
    reads ``Cache.stats()`` once per interval (and at once after an eviction). SQLite can
    wait on another process's transaction; that wait must not stall the log tail.
samplers of ``engine/monitor``
    each in its own thread; the loop only reads their ``latest()``.
commands
    run in the caller's thread (the server's executor); stop and restart wait up to the
    grace period there, never in the loop.
"""

from __future__ import annotations

import codecs
import collections
import logging
import os
import shutil
import signal as _signal
import socket as _socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .._version import __version__
from ..cache import Cache, index_kwargs
from ..cache.integrity import CacheLayout
from ..cache.types import CacheStats
from ..config import Config
from ..errors import CacheIndexUnavailable, CachewatchError
from ..events import Event, EventLog
from ..training.ondemand import OnDemandBuildDetector, sample_from
from ..training.records import ReportRecord
from ..training.runstate import RestartPolicy, TrainingState
from ..training.supervisor import ENGINE_ENV, Supervisor, SupervisorError
from ..watch.stats import WatchStats
from . import orphans, runtime
from . import alerts
from .alerts import AlertBoard, Finding
from .commands import HANDLERS, watch_root
from .errors import CommandFailed
from .jobrunner import JobRunner
from .parts import EngineParts, NoProgress, PeriodicSampler, ProgressFeedLike, default_parts
from .protocol import COMMANDS, PROTOCOL_VERSION, ErrorCode, LogChunk
from .snapshot import CacheView, EngineInfo, EngineSnapshot, EvictionView, JobView
from .evictions import EvictionFollower
from .tail import FileTail, read_chunk

__all__ = ["Engine", "CONFIG_ENV"]

log = logging.getLogger(__name__)

CONFIG_ENV = "CACHEWATCH_CONFIG"
_EVICTIONS_KEPT = 50
_PARSE_WINDOW_BYTES = 256 * 1024  # at most this much new output is parsed per poll

_T = TypeVar("_T")
SnapshotListener = Callable[[EngineSnapshot], None]
EventListener = Callable[[Event], None]
LogListener = Callable[[int, bytes], None]
StopListener = Callable[[str], None]


class Engine:
    """See the module docstring. Use :meth:`start`, then :meth:`snapshot` / :meth:`execute`,
    and :meth:`close` (which stops the training unless told otherwise)."""

    def __init__(
        self,
        config: Config,
        *,
        name: str,
        command: Sequence[str] = (),
        state_dir: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        parts: EngineParts | None = None,
        exit_with_training: bool = False,
        tail_interval_s: float = 0.05,
        idle_tail_interval_s: float = 0.25,
        feed_poll_s: float = 0.1,
        min_publish_s: float = 0.1,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.name = runtime.check_engine_name(name)
        self.command = tuple(command) or tuple(config.run.command)
        self.state_dir = (runtime.ensure_state_dir(Path(state_dir)) if state_dir is not None
                          else runtime.state_dir(name, config.run.log_dir))
        # Created 0600 before their writers (the supervisor, the event log) would create them 0644.
        for fname in ("training.log", "progress.jsonl", "events.jsonl"):
            runtime.create_private_file(self.state_dir / fname)
        self.run_id = uuid.uuid4().hex  # tags every process of the training (see orphans.py)
        self.tree = orphans.TreeKeeper(self.run_id)
        self.cwd = str(config.run.cwd) if config.run.cwd is not None else (str(cwd) if cwd is not None else os.getcwd())
        self.log_path = self.state_dir / "training.log"
        self.progress_path = self.state_dir / "progress.jsonl"
        self.events = EventLog(self.state_dir / "events.jsonl", source=f"engine:{name}")
        self.interval_s = max(0.05, float(config.monitor.interval))
        self.tail_interval_s = tail_interval_s
        self.idle_tail_interval_s = max(tail_interval_s, idle_tail_interval_s)
        self.feed_poll_s = feed_poll_s
        self._next_feed_poll = 0.0
        self.min_publish_s = min_publish_s
        self.exit_with_training = exit_with_training
        self.parts = parts if parts is not None else default_parts(config)
        self._feed: ProgressFeedLike = NoProgress()  # replaced at each attempt's start
        self._on_demand = OnDemandBuildDetector()  # cache misses during training (seed 004)
        self.info = EngineInfo(
            name=self.name,
            pid=os.getpid(),
            version=__version__,
            protocol=PROTOCOL_VERSION,
            started=time.time(),
            hostname=_socket.gethostname(),
            config_path=None if config.path is None else str(config.path),
            state_dir=str(self.state_dir),
            log_path=str(self.log_path),
            events_path=str(self.events.path),
            interval_s=self.interval_s,
        )
        self._log_tail = FileTail.at_end(self.log_path)
        self.info = replace(self.info, log_start_offset=self._log_tail.offset)
        self._env = dict(os.environ if env is None else env)
        self.alerts = AlertBoard()
        self.jobs = JobRunner(self._on_job)
        self.cache: Cache | None = None
        self.cache_error: str | None = None
        self._cache_retry = False  # a Redis-indexed cache that could not be opened yet: tried again each sample
        self._cache_sampler: PeriodicSampler | None = None
        self.supervisor: Supervisor | None = None

        self._lock = threading.RLock()
        self._poll_lock = threading.RLock()  # the loop and the supervisor's callbacks both read the tails
        self._publish_lock = threading.Lock()  # snapshots reach listeners in seq order
        self._wake = threading.Event()
        self._dirty = True
        self._closing = False
        self._started = False
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._snapshot: EngineSnapshot | None = None
        self._last_publish = 0.0
        self._snapshot_listeners: list[SnapshotListener] = []
        self._interest: list[Callable[[], float | None]] = []
        self._event_listeners: list[EventListener] = []
        self._log_listeners: list[LogListener] = []
        self._stop_listeners: list[StopListener] = []
        self.stop_reason: str | None = None
        self.stopped = threading.Event()  # set by request_stop(); the owner then calls close()

        self._log_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.watchers: list[Any] = []
        self._eviction_feed = EvictionFollower(self.state_dir / "eviction-offsets.json")
        self._evictions: collections.deque[EvictionView] = collections.deque(maxlen=_EVICTIONS_KEPT)

    # ------------------------------------------------------------------------------ listeners
    def _add(self, bucket: list[Any], fn: Any) -> Callable[[], None]:
        with self._lock:
            bucket.append(fn)

        def remove() -> None:
            with self._lock:
                if fn in bucket:
                    bucket.remove(fn)

        return remove

    def add_snapshot_listener(self, fn: SnapshotListener, wants: Callable[[], float | None] | None = None) -> Callable[[], None]:
        """``fn(snapshot)`` from the engine thread after each publish; keep it short.

        ``wants()`` says whether anyone behind ``fn`` watches right now, and how often: None for
        nobody, else the shortest interval between snapshots someone asked for (0: every
        change). While nobody watches, the engine publishes once per sampling interval and polls
        its files less often: an unwatched headless engine costs almost nothing.
        """
        if wants is not None:
            with self._lock:
                self._interest.append(wants)
        remove = self._add(self._snapshot_listeners, fn)

        def remove_both() -> None:
            remove()
            with self._lock:
                if wants in self._interest:
                    self._interest.remove(wants)

        return remove_both

    def _publish_gap(self) -> float | None:
        """How soon after the last snapshot a change may be published; None when nobody watches."""
        with self._lock:
            always = len(self._snapshot_listeners) > len(self._interest)  # a listener that did not say
            wants = list(self._interest)
        asked = [v for v in (w() for w in wants) if v is not None]
        if always:
            asked.append(0.0)
        return max(self.min_publish_s, min(asked)) if asked else None

    def add_event_listener(self, fn: EventListener) -> Callable[[], None]:
        return self._add(self._event_listeners, fn)

    def add_log_listener(self, fn: LogListener) -> Callable[[], None]:
        """``fn(offset, data)`` for each new piece of training output, in order."""
        return self._add(self._log_listeners, fn)

    def add_stop_listener(self, fn: StopListener) -> Callable[[], None]:
        return self._add(self._stop_listeners, fn)

    def _call(self, bucket: list[Any], *args: Any) -> None:
        with self._lock:
            fns = list(bucket)
        for fn in fns:
            try:
                fn(*args)
            except Exception:
                log.exception("engine listener failed")

    # ------------------------------------------------------------------------------ lifecycle
    def set_endpoints(self, *, socket_path: str | None = None, metrics_url: str | None = None) -> None:
        with self._lock:
            self.info = replace(
                self.info,
                socket_path=socket_path if socket_path is not None else self.info.socket_path,
                metrics_url=metrics_url if metrics_url is not None else self.info.metrics_url,
            )
        self._changed()

    def start(self) -> "Engine":
        """Open the cache, start the samplers and the training. Raises on a bad cache or command."""
        if self._started:
            return self
        self._started = True
        self._open_caches()
        if self.parts.monitor is not None:
            self.parts.monitor.start()
        self.record("engine.started", pid=os.getpid(), name=self.name, command=list(self.command),
                    config=self.info.config_path)
        if self.command:
            run = self.config.run
            env = dict(self._env)
            env[ENGINE_ENV] = self.name
            env[orphans.RUN_ID_ENV] = self.run_id
            if self.config.path is not None:
                env[CONFIG_ENV] = str(self.config.path)
            self.supervisor = Supervisor(
                self.command,
                log_path=self.log_path,
                cwd=self.cwd,
                env=env,
                progress_path=self.progress_path,
                policy=RestartPolicy(run.restart, run.max_restarts, run.backoff, run.backoff_max),
                stop_grace_s=run.stop_grace,
                on_event=self._on_training_event,
                tty=run.tty,
                max_line_bytes=run.log_max_line,
                log_max_bytes=run.log_max_size,
                log_keep=run.log_keep,
            )
            try:
                self.supervisor.start()
            except Exception:
                self._shutdown_parts()
                raise
        self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)
        self._thread.start()
        return self

    def request_stop(self, reason: str) -> None:
        """Ask the owner of this engine to close it (the daemon's main thread waits on this)."""
        with self._lock:
            if self.stop_reason is not None:
                return
            self.stop_reason = reason
        self.stopped.set()
        self._call(self._stop_listeners, reason)

    def close(self, *, stop_training: bool = True) -> None:
        """Stop the training (gracefully, unless told not to), the threads, and the cache."""
        if self._closing:
            return
        if stop_training and self.supervisor is not None:
            info = self.supervisor.info()
            if info.state.live or info.state is TrainingState.RESTARTING:
                self.stop_training(self.supervisor.stop)
            else:
                self._end_leftovers(self.tree.members(None))
            orphans.remove_record(self.state_dir, self.run_id)
        self.jobs.shutdown()
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._publish()
        self.record("engine.stopped", reason=self.stop_reason or "closed")
        self._shutdown_parts()

    def _shutdown_parts(self) -> None:
        self._log_tail.close()
        if self.parts.monitor is not None:
            try:
                self.parts.monitor.stop()
            except Exception:
                log.exception("monitor stop failed")
        if self._cache_sampler is not None:
            self._cache_sampler.stop()
        for w in self.watchers:
            try:
                w.stop()
            except Exception:
                log.exception("watch stop failed")
        if self.cache is not None:
            try:
                self.cache.close()
            except Exception:
                log.exception("cache close failed")

    def stop_training(self, how: Callable[[], Any], *, rescan: bool = True) -> Any:
        """``how()`` (the supervisor's stop or restart: SIGTERM/SIGKILL to the training's group),
        then the same to every process of the training that left the group (``setsid``).

        The tree is taken before the leader goes (after, its children belong to init); with
        ``rescan`` (a stop), processes tagged with the run id are looked for again afterwards;
        not after a restart, whose new attempt carries the same tag.
        """
        sup = self.supervisor
        assert sup is not None
        leader = sup.info().pid
        before = self.tree.members(leader)
        try:
            leader_group = os.getpgid(leader) if leader else None
        except OSError:
            leader_group = None
        outside = [p for p in before if _pgid(p.pid) != leader_group]
        for p in outside:  # their grace period runs alongside the group's
            for sig in (_signal.SIGTERM, _signal.SIGCONT):
                try:
                    p.send_signal(sig)
                except Exception:
                    pass
        result = how()
        left = {p.pid: p for p in before}
        if rescan:
            for p in self.tree.members(None):
                left.setdefault(p.pid, p)
        self._end_leftovers(list(left.values()), signalled=[p.pid for p in outside])
        return result

    def _end_leftovers(self, procs: list[Any], signalled: Sequence[int] = ()) -> None:
        ended = set(orphans.end_processes(procs, self.config.run.stop_grace)) | set(signalled)
        if ended:
            self.record("training.leftovers_ended", pids=sorted(ended),
                        reason="processes of the training outside its process group (setsid)")

    # ------------------------------------------------------------------------- caches, watches
    def _open_managed_cache(self) -> None:
        c = self.config.cache
        cache = Cache.from_config(self.config) if c.max_size is not None else Cache(c.root, **index_kwargs(c))  # type: ignore[arg-type]
        for report in reversed(cache.eviction_log(limit=20)):
            self._evictions.appendleft(_eviction_view(str(cache.root), report.to_json(), report.time))
        self._eviction_feed.add(str(cache.root), cache.events)
        self.cache, self.cache_error, self._cache_retry = cache, None, False

    def _open_caches(self) -> None:
        c = self.config.cache
        if c.root is not None:
            if c.max_size is None and not CacheLayout.of(c.root).has_index():
                self.cache_error = "[cache] max_size is not set and the cache does not exist yet; set max_size"
            else:
                try:
                    self._open_managed_cache()
                except CacheIndexUnavailable as exc:
                    # A Redis-indexed cache whose Redis is away: the training starts anyway (its own
                    # puts fail clearly, its reads work); the figures come when Redis is back.
                    self.cache_error = str(exc)
                    self._cache_retry = True
        for wcfg in self.config.watch:
            if self.parts.new_watch is None:
                log.warning("[[watch]] %s: watched directories are not built into this engine", wcfg.root)
                continue
            watcher = self.parts.new_watch(wcfg)
            watcher.start()
            self.watchers.append(watcher)
            self._eviction_feed.add(watch_root(watcher), watcher.events)
        if c.root is not None or self.watchers:
            self._cache_sampler = PeriodicSampler(self._read_caches, self.interval_s, name="cache-sampler",
                                                  on_sample=self._changed)
            self._cache_sampler.start()

    def _read_caches(self) -> tuple[CacheView | None, tuple[Any, ...]]:
        """The managed cache's view and each watched directory's stats (in the cache-sampler thread)."""
        view = None
        if self.config.cache.root is not None:
            root = str(self.config.cache.root)
            if self.cache is None and self._cache_retry:
                try:
                    self._open_managed_cache()
                except CacheIndexUnavailable as exc:
                    self.cache_error = str(exc)
            if self.cache is None:
                view = CacheView(root=root, error=self.cache_error)
            else:
                try:
                    stats = self.cache.stats()
                    disk = shutil.disk_usage(self.cache.root)
                    view = CacheView(root=str(self.cache.root), stats=stats, disk_free_bytes=disk.free,
                                     disk_total_bytes=disk.total)
                except Exception as exc:  # a locked or broken index: show why, try again next time
                    view = CacheView(root=root, error=f"{type(exc).__name__}: {exc}")
        watched = []
        for w in self.watchers:
            try:
                watched.append(w.stats())
            except Exception:
                log.exception("watch stats failed")
        return view, tuple(watched)

    def poll_evictions(self) -> bool:
        found = self._eviction_feed.poll()
        for root, e in found:
            fields = {k: v for k, v in e.fields.items() if k != "keys"}
            fields["key_count"] = len(e.get("keys", ()) or ())
            self.record("eviction", time_s=e.time, cache=root, **fields)
            self._evictions.appendleft(_eviction_view(root, e.fields, e.time))
        if found and self._cache_sampler is not None:
            self._cache_sampler.poke()  # fresh sizes right behind the eviction
        return bool(found)

    def _sampled_caches(self) -> tuple[CacheView | None, tuple[WatchStats, ...]]:
        latest = self._cache_sampler.latest() if self._cache_sampler is not None else None
        if latest is None:
            view = CacheView(root=str(self.config.cache.root), error=self.cache_error) if self.config.cache.root else None
            return view, ()
        view, watched = latest
        return view, watched

    # --------------------------------------------------------------------------------- events
    def record(self, kind: str, /, *, time_s: float | None = None, **fields: Any) -> Event:
        """Append an event to the engine's log and hand it to followers."""
        try:
            event = self.events.append(kind, time_s=time_s, **fields)
        except OSError as exc:  # a full disk loses the record, never the engine
            log.warning("cannot write event %s: %s", kind, exc)
            event = Event(kind=kind, time=time.time() if time_s is None else time_s, fields=fields, source=self.events.source)
        self._call(self._event_listeners, event)
        return event

    def query_events(self, *, since: float | None = None, kinds: Sequence[str] | None = None,
                     limit: int | None = None) -> list[Event]:
        return self.events.read(kinds=kinds, since=since, limit=limit)

    def _on_training_event(self, kind: str, fields: dict[str, Any]) -> None:
        self.record(kind, **fields)
        now = time.time()
        monitor = self.parts.monitor
        if kind == "training.started":
            pid = fields.get("pid")
            if isinstance(pid, int):
                orphans.write_record(self.state_dir, run_id=self.run_id, pid=pid, command=self.command,
                                     engine_name=self.name)
            self._on_demand.reset()
            with self._poll_lock:
                self._poll_files()  # what the previous attempt wrote still belongs to it
                self._feed = self.parts.new_feed(self.progress_path, now) if self.parts.new_feed is not None else NoProgress()
            if monitor is not None:
                monitor.set_root_pid(fields.get("pid"))
        elif kind in ("training.paused", "training.resumed"):
            # Paused time is not training time: the ETA neither runs down nor grows with it.
            feed = self._feed
            _safe_value(lambda: (feed.pause if kind == "training.paused" else feed.resume)(now))
        elif kind == "training.exited":
            self._drain_output(now)
            code, requested = fields.get("exit_code"), bool(fields.get("requested"))
            outcome = "stopped" if requested else ("finished" if code == 0 and not fields.get("signal") else "failed")
            for alert in _safe(self._feed.finish, now, outcome):
                self._raise(alerts.oom_finding(alert, self._attempt()), now)
            if monitor is not None:
                monitor.set_root_pid(None)
            self._alert_exit(fields, now)
        elif kind == "training.failed":
            self._raise(alerts.failed_restart_finding(str(fields.get("error", ""))), now)
        self._changed()
        if self.exit_with_training and self.supervisor is not None and self.supervisor.info().state.over:
            self.request_stop("the training ended")

    def _alert_exit(self, fields: Mapping[str, Any], now: float) -> None:
        if fields.get("requested") or (fields.get("exit_code") == 0 and fields.get("signal") is None):
            return
        info = self.supervisor.info() if self.supervisor is not None else None
        follow = ""
        if info is not None and info.state is TrainingState.RESTARTING and info.next_restart_at:
            follow = (f"; restart {info.failure_restarts + 1}/{info.policy.max_restarts} "
                      f"in {max(0.0, info.next_restart_at - now):.0f}s")
        diag = None
        if self.parts.classify_exit is not None:
            sig = fields.get("signal")
            try:
                sig_num = int(_signal.Signals[str(sig)]) if sig in _signal.Signals.__members__ else None
                diag = self.parts.classify_exit(exit_code=fields.get("exit_code"), signal=sig_num,
                                                cuda_oom=self._feed.last_cuda_oom, stopped_by_user=False)
            except Exception:
                log.exception("exit classifier failed")
        self._raise(alerts.exit_finding(fields, diag, follow), now)

    def _judge(self, verdicts: alerts.Verdicts, now: float) -> None:
        for key, finding in verdicts.items():
            if finding is None:
                self.alerts.clear(key)
            else:
                self._raise(finding, now)

    def _raise(self, f: Finding | None, now: float) -> None:
        if f is None:
            return
        alert, new = self.alerts.raise_alert(f.kind, f.severity, f.title, f.text, remedies=tuple(f.remedies),
                                             figures=f.figures, key=f.key, now=now)
        if new:
            self.record("alert", id=alert.id, alert_kind=alert.kind, severity=alert.severity, title=alert.title,
                        text=alert.text, remedies=list(alert.remedies), figures=dict(alert.figures))
        self._changed()

    def _on_job(self, kind: str, view: JobView) -> None:
        if kind:
            fields: dict[str, Any] = {"job_id": view.id, "job_kind": view.kind, "state": view.state, "done": view.done,
                                      "total": view.total, "message": view.message, "phase": view.phase,
                                      "bytes_done": view.bytes_done, "bytes_total": view.bytes_total, "eta_s": view.eta_s}
            if kind == "job.finished":
                fields.update(error=view.error, result=dict(view.result))
            self.record(kind, **fields)
        self._changed()

    # ----------------------------------------------------------------------------------- loop
    def _changed(self) -> None:
        self._dirty = True
        self._wake.set()

    def _loop(self) -> None:
        next_check = 0.0
        while not self._closing:
            now = time.monotonic()
            try:
                with self._poll_lock:
                    if self._poll_files():
                        self._dirty = True
                if now >= next_check:
                    self._check_thresholds()
                    next_check = now + self.interval_s
                    self._dirty = True
                wanted = self._publish_gap()
                watched = wanted is not None
                gap = wanted if wanted is not None else self.interval_s
                if self._dirty and now - self._last_publish >= gap:
                    self._publish()
            except Exception:  # the loop must survive anything one poll throws
                log.exception("engine loop iteration failed")
                watched, gap = True, self.min_publish_s
            wait = self.tail_interval_s if watched else self.idle_tail_interval_s
            if self._dirty:
                wait = min(wait, max(0.0, gap - (time.monotonic() - self._last_publish)))
            self._wake.wait(wait)
            self._wake.clear()

    def _poll_files(self) -> bool:
        changed = False
        now = time.time()
        parts: list[bytes] = []
        size = 0
        while True:  # a burst of output is read to the end, 1 MiB at a time
            offset, data = self._log_tail.read_new()
            if not data:
                break
            changed = True
            self._call(self._log_listeners, offset, data)
            parts.append(data)
            size += len(data)
            if size > 2 * _PARSE_WINDOW_BYTES:  # keep only what may be parsed
                joined = b"".join(parts)[-_PARSE_WINDOW_BYTES:]
                parts, size = [joined], len(joined)
            if len(data) < 1024 * 1024:
                break
        if parts:
            data = b"".join(parts)
            if size > _PARSE_WINDOW_BYTES:
                # A flood of output (a training printing megabytes a second) would cost the engine
                # more CPU than the training; progress and OOM messages that matter are the latest
                # ones, so only the tail is parsed, from a line start.
                data = data[-_PARSE_WINDOW_BYTES:]
                data = data[data.find(b"\n") + 1:]
                self._log_decoder.reset()
            for alert in _safe(self._feed.feed_output, self._log_decoder.decode(data), now):
                self._raise(alerts.oom_finding(alert, self._attempt()), now)
        mono = time.monotonic()
        records: Sequence[ReportRecord] = ()
        if mono >= self._next_feed_poll:
            # The progress file is read at most every feed_poll_s: a script reporting every step
            # (tens of lines a second) is parsed in batches, which costs far less per line.
            self._next_feed_poll = mono + self.feed_poll_s
            records = _safe(self._feed.poll, now)
        for rec in records:
            changed = True
            if rec.kind in ("checkpoint", "event"):
                fields = {k: v for k, v in rec.to_json().items() if k not in ("v", "kind", "t")}
                self.record("training.checkpoint" if rec.kind == "checkpoint" else "training.report", **fields)
        if self.poll_evictions():
            changed = True
        return changed

    def _drain_output(self, now: float) -> None:
        """Read the exited attempt's last output now, so its OOM message counts for this attempt."""
        with self._poll_lock:
            self._poll_files()

    def _attempt(self) -> int:
        return self.supervisor.info().attempt if self.supervisor is not None else 0

    def _check_thresholds(self) -> None:
        now = time.time()
        mon = self.parts.monitor.snapshot() if self.parts.monitor is not None else None
        if mon is not None and mon.tree is not None:
            self.tree.note(mon.tree.processes)
        if mon is not None and mon.host is not None:
            self._judge(alerts.host_findings(mon.host), now)
        view, watched = self._sampled_caches()
        for w in watched:
            self._judge(alerts.watch_findings(w), now)
        if isinstance(view, CacheView) and view.stats is not None:
            self._judge(alerts.cache_findings(view.stats), now)
            self._check_on_demand_build(view.stats, now)

    def _check_on_demand_build(self, stats: CacheStats, now: float) -> None:
        """Seed 004: misses that keep coming while the training runs mean the cache is built on demand."""
        info = self.supervisor.info() if self.supervisor is not None else None
        if info is None or info.state is not TrainingState.RUNNING:
            return
        progress = _safe_value(lambda: self._feed.snapshot(now))
        found = self._on_demand.observe(sample_from(now, stats.hits, stats.misses, progress))
        if found is not None:
            self._raise(alerts.on_demand_finding(found, info.attempt), now)

    def _publish(self) -> EngineSnapshot:
        with self._publish_lock:
            self._dirty = False
            snap = self._build_snapshot()
            with self._lock:
                self._snapshot = snap
                self._last_publish = time.monotonic()
            self._call(self._snapshot_listeners, snap)
        return snap

    def _build_snapshot(self) -> EngineSnapshot:
        now = time.time()
        p = self.parts
        with self._lock:
            self._seq += 1
            seq = self._seq
            info = self.info
        cache_view, watched = self._sampled_caches()
        mon = _safe_value(p.monitor.snapshot) if p.monitor is not None else None
        return EngineSnapshot(
            seq=seq,
            time=now,
            engine=info,
            training=self.supervisor.info() if self.supervisor is not None else None,
            progress=_safe_value(lambda: self._feed.snapshot(now)),
            workers=mon.tree if mon is not None else None,
            gpu=mon.gpu if mon is not None else None,
            host=mon.host if mon is not None else None,
            caches=(cache_view,) if cache_view is not None else (),
            watched=watched,
            evictions=tuple(self._evictions),
            alerts=self.alerts.alerts(),
            jobs=self.jobs.jobs(),
            log_size_bytes=self._log_tail.offset,
        )

    # ------------------------------------------------------------------------------- reading
    def snapshot(self) -> EngineSnapshot:
        """The latest snapshot: the last published one, or a fresh one when something changed since."""
        with self._lock:
            snap = self._snapshot
            stale = self._dirty and time.monotonic() - self._last_publish >= self.min_publish_s
        return snap if snap is not None and not stale else self._publish()

    def read_log(self, offset: int = -64 * 1024, max_bytes: int = 64 * 1024) -> LogChunk:
        return read_chunk(self.log_path, offset, max_bytes)

    # ------------------------------------------------------------------------------ commands
    def execute(self, name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run one command (see ``protocol.COMMANDS``); raise :class:`CommandFailed` on refusal.

        The arguments are checked against the command table first: a wrong type, a value out of
        range, an unknown or missing argument is refused with ``bad_args`` naming it, before
        anything starts.
        """
        spec = COMMANDS.get(name) if isinstance(name, str) else None
        if spec is None:
            raise CommandFailed(
                f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}", ErrorCode.UNKNOWN_COMMAND.value
            )
        sent = dict(args or {})  # recorded as the client wrote it ("200KB", not 200000)
        try:
            args = spec.check_args({} if args is None else args)
        except ValueError as exc:
            raise CommandFailed(str(exc), ErrorCode.BAD_ARGS.value) from None
        result: dict[str, Any]
        try:
            result = HANDLERS[name](self, args)
        except CommandFailed:
            raise
        except SupervisorError as exc:
            raise CommandFailed(str(exc), ErrorCode.CONFLICT.value) from None
        except CachewatchError as exc:
            raise CommandFailed(str(exc), ErrorCode.FAILED.value) from None
        self.record("command", command=name, args={k: v for k, v in sent.items() if isinstance(v, (str, int, float, bool))},
                    destructive=spec.is_destructive(args))
        self._publish()  # the next snapshot a client sees already shows what the command did
        return result


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _eviction_view(root: str, fields: Mapping[str, Any], t: float) -> EvictionView:
    return EvictionView(
        time=t,
        cache=root,
        reason=str(fields.get("reason", "")),
        files=int(fields.get("files", 0) or 0),
        bytes=int(fields.get("bytes", 0) or 0),
        size_before=int(fields.get("size_before", 0) or 0),
        size_after=int(fields.get("size_after", 0) or 0),
        dry_run=bool(fields.get("dry_run", False)),
    )


def _safe(fn: Callable[..., Sequence[Any]], *args: Any) -> Sequence[Any]:
    try:
        return fn(*args) or ()
    except Exception:  # a parser bug must not stop the tail
        _log_failure(getattr(fn, "__qualname__", "progress feed"))
        return ()


def _safe_value(fn: Callable[[], _T]) -> _T | None:
    try:
        return fn()
    except Exception:
        _log_failure(getattr(fn, "__qualname__", "snapshot part"))
        return None


_last_logged: dict[str, float] = {}


def _log_failure(what: str) -> None:
    # A part that fails on every poll would fill engine.log at 20 lines a second; once a minute
    # per place is enough to see it.
    now = time.monotonic()
    if now - _last_logged.get(what, -1e9) >= 60.0:
        _last_logged[what] = now
        log.exception("%s failed (repeats are not logged for a minute)", what)
