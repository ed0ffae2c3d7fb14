"""``build``: fill the cache from the source before training, not during it (seed 004).

Each source item is turned into bytes by the user's transform (``[source] transform =
"module:function"``, called with the item's path, returning bytes or the path of a
file it wrote) in a pool of worker processes, and stored with ``Cache.put`` /
``put_file`` from that worker, so the cache's size bound holds for the build as for
any other writer.

Resumable by construction: an item is skipped when its key is already in the cache,
and an entry only exists once it is complete (the cache's atomic put). A ``kill -9``
leaves at most reservations and ``.part`` files of dead workers, which the next
opener of the cache reclaims; running ``build`` again makes exactly what is missing.

A failing item is logged (``build.item_failed`` in the cache's event log, and a job
message) and counted; the build goes on. A worker that dies (a crash, an
out-of-memory kill) fails the items it may have held after one retry each, and a
fresh pool carries on.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cache import Cache, index_kwargs
from ..cache.integrity import CacheLayout
from ..config import Config
from ..errors import CachewatchError, ConfigError
from ..sizes import format_duration, format_size
from .base import Job, JobContext
from .base import _mp_context as mp_context
from .job_lock import exclusive_job
from .source import SourceItem, SourceSpec, load_transform

__all__ = ["BuildJob", "BuildReport", "BuildFailure", "build_cache", "MAX_FAILURES_LISTED"]

MAX_FAILURES_LISTED = 1000
_CANCEL_GRACE_S = 30.0


@dataclass(frozen=True)
class BuildFailure:
    key: str
    path: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BuildReport:
    root: str
    source: str
    source_items: int
    already_cached: int
    built: int
    failed: int
    bytes_built: int
    failures: tuple[BuildFailure, ...] = ()
    evicted_during_build: int = 0
    complete_items: int = 0
    workers: int = 1
    duration_s: float = 0.0
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.cancelled and self.complete_items == self.source_items

    def summary(self) -> str:
        lines = [
            f"cache     {self.root}",
            f"source    {self.source}: {self.source_items} items, {self.already_cached} were already cached",
            f"built     {self.built} entries ({format_size(self.bytes_built)}) with {self.workers} workers "
            f"in {format_duration(self.duration_s)}",
        ]
        if self.failed:
            lines.append(f"failed    {self.failed} items (logged as build.item_failed in the cache's event log)")
            for f in self.failures[:10]:
                lines.append(f"  {f.path}: {f.error}")
            if self.failed > 10:
                lines.append(f"  ... and {self.failed - 10} more (--json lists them)")
        if self.evicted_during_build:
            lines.append(
                f"evicted   {self.evicted_during_build} entries while building: the source needs more room than "
                f"the cache's target; raise [cache] max_size"
            )
        if self.cancelled:
            lines.append("result    cancelled; run build again to finish (it resumes where it stopped)")
        elif self.ok:
            lines.append(f"result    complete: {self.complete_items} of {self.source_items} source items cached")
        else:
            lines.append(f"result    incomplete: {self.complete_items} of {self.source_items} source items cached")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["failures"] = [f.to_json() for f in self.failures]
        out["ok"] = self.ok
        return out


# ------------------------------------------------------------------------------ worker side
_WORKER: dict[str, Any] = {}


def _init_worker(cache_state: dict[str, Any], transform: str | None, base_dir: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to turn into a clean cancel
    _WORKER.clear()
    try:
        _WORKER["cache"] = Cache(**cache_state)
        _WORKER["fn"] = load_transform(transform, Path(base_dir) if base_dir else None) if transform else None
    except Exception as exc:  # reported per item, so the parent sees the reason instead of a broken pool
        _WORKER["error"] = _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return msg if isinstance(exc, CachewatchError) else f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


@dataclass(frozen=True)
class _Outcome:
    key: str
    ok: bool
    size_bytes: int = 0
    error: str = ""


def _build_item(key: str, path: str) -> _Outcome:
    if "error" in _WORKER:
        return _Outcome(key, False, error=_WORKER["error"])
    cache: Cache = _WORKER["cache"]
    fn = _WORKER["fn"]
    try:
        # The size is taken from what was stored, not from the entry's file afterwards: in a cache
        # smaller than the source another worker may evict the entry before this one looks at it.
        if fn is None:
            size = os.stat(path).st_size
            cache.put_file(key, path)
        else:
            out = fn(Path(path))
            if isinstance(out, (bytes, bytearray, memoryview)):
                size = memoryview(out).nbytes
                cache.put(key, out)
            elif isinstance(out, (str, os.PathLike)):
                size = os.stat(out).st_size
                cache.put_file(key, out)
            else:
                return _Outcome(
                    key, False,
                    error=f"transform returned {type(out).__name__}; return bytes (np.save into io.BytesIO) or a file path",
                )
        # Indexed before the parent hears of it (a put is visible to other processes only once
        # its batch commits): the parent counts complete items as soon as the pool is done.
        cache.flush()
        return _Outcome(key, True, size)
    except Exception as exc:
        return _Outcome(key, False, error=_one_line(exc))


# ------------------------------------------------------------------------------ parent side
def _cache_state(cache: Cache) -> dict[str, Any]:
    # What a pickled cache carries: the stored limits, and for a Redis-indexed one its URL, node
    # id and lease (workers opened from the root alone wrote as the host name, not the node).
    state = cache.__getstate__()
    state["sweep"] = False
    return state


def _index_args(cache: Cache) -> dict[str, Any] | None:
    state = cache.__getstate__()
    if state.get("index") is None:
        return None
    return {k: state[k] for k in ("index", "node", "lease_s") if state.get(k) is not None}


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # There is no public way to stop a task in flight; a killed worker's reservation is
    # reclaimed by cache.recover() (its owner lock died with it).
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.kill()
        except Exception:
            pass


def build_cache(
    cache: Cache,
    source: SourceSpec,
    *,
    workers: int | None = None,
    items: list[SourceItem] | None = None,
    ctx: JobContext | None = None,
) -> BuildReport:
    """Make every missing source item's entry. ``items`` defaults to ``source.items()``."""
    ctx = ctx or JobContext("build", "build")
    t0 = time.monotonic()
    workers = max(1, workers or os.cpu_count() or 1)
    items = source.items() if items is None else items
    if source.transform:
        load_transform(source.transform, source.base_dir)  # fail now, with the import error, not once per item
    ctx.progress("plan", 0, len(items), message="checking which items are cached")
    todo: list[SourceItem] = []
    for i, it in enumerate(items):
        if it.key not in cache:
            todo.append(it)
        if i % 256 == 0:
            ctx.check()
            ctx.progress("plan", i, len(items))
    already = len(items) - len(todo)
    evicted_before = cache.stats().evicted_files
    total_bytes = sum(it.size_bytes for it in todo)

    built = failed = bytes_built = done_bytes = 0
    failures: list[BuildFailure] = []
    suspects: set[str] = set()
    queue: deque[SourceItem] = deque(todo)
    cancelled = False

    def fail(it: SourceItem, error: str) -> None:
        nonlocal failed
        failed += 1
        if len(failures) < MAX_FAILURES_LISTED:
            failures.append(BuildFailure(it.key, str(it.path), error))
        try:
            cache.events.append("build.item_failed", key=it.key, path=str(it.path), error=error, pid=os.getpid())
        except OSError:
            pass
        ctx.warn(f"failed {it.relpath}: {error}")

    state = _cache_state(cache)
    init = (state, source.transform, str(source.base_dir) if source.base_dir else None)
    window = workers * 2
    while queue and not cancelled:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp_context(), initializer=_init_worker, initargs=init)
        pending: dict[Any, SourceItem] = {}
        broken = False
        try:
            while (queue or pending) and not broken:
                if ctx.cancelled:
                    cancelled = True
                    break
                while queue and len(pending) < window:
                    # A suspect (in flight when a worker died) runs alone, so a second death names the culprit.
                    alone = queue[0].key in suspects
                    if pending and (alone or any(p.key in suspects for p in pending.values())):
                        break
                    it = queue.popleft()
                    try:
                        pending[pool.submit(_build_item, it.key, str(it.path))] = it
                    except BrokenProcessPool:
                        queue.appendleft(it)
                        broken = True
                        break
                    if alone:
                        break
                if not pending:
                    break
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    it = pending.pop(fut)
                    try:
                        out: _Outcome = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        pending[fut] = it  # judged below with the others in flight
                        continue
                    done_bytes += it.size_bytes
                    if out.ok:
                        built += 1
                        bytes_built += out.size_bytes
                    else:
                        fail(it, out.error)
                ctx.progress(
                    "build", built + failed, len(todo), unit="items", bytes_done=done_bytes, bytes_total=total_bytes or None,
                    message=f"{built} built, {failed} failed",
                )
            if broken:
                in_flight = list(pending.values())
                pending.clear()
                if len(in_flight) == 1:  # it ran alone: it is the culprit
                    done_bytes += in_flight[0].size_bytes
                    fail(in_flight[0], "the worker process died while building this item (a crash or an out-of-memory kill)")
                else:  # one of these killed the worker; retry each alone
                    for it in reversed(in_flight):
                        suspects.add(it.key)
                        queue.appendleft(it)
        finally:
            if cancelled or not broken:
                pool.shutdown(wait=False, cancel_futures=True)
                if pending:
                    ctx.progress("cancel", 0, len(pending), message="waiting for items in flight")
                    finished, still = wait(list(pending), timeout=_CANCEL_GRACE_S)
                    for fut in finished:
                        it = pending.pop(fut)
                        try:
                            out = fut.result()
                        except Exception:
                            continue
                        if out.ok:
                            built += 1
                            bytes_built += out.size_bytes
                    if still:
                        _kill_workers(pool)
                pool.shutdown(wait=True)
            else:
                pool.shutdown(wait=True, cancel_futures=True)
            if cancelled or broken:
                cache.recover()  # reservations and .part files of killed workers
        if cancelled:
            break
    ctx.progress("check", 0, len(items), message="counting complete items", force=True)
    complete = sum(1 for it in items if it.key in cache)
    evicted = cache.stats().evicted_files - evicted_before
    if evicted:
        ctx.warn(f"{evicted} entries were evicted during the build; the cache is too small for the source")
    return BuildReport(
        root=str(cache.root),
        source=source.describe(),
        source_items=len(items),
        already_cached=already,
        built=built,
        failed=failed,
        bytes_built=bytes_built,
        failures=tuple(failures),
        evicted_during_build=evicted,
        complete_items=complete,
        workers=workers,
        duration_s=time.monotonic() - t0,
        cancelled=cancelled,
    )


def open_cache_for_build(cfg: Config, root: str | os.PathLike | None = None, max_size: int | str | None = None) -> Cache:
    """The cache a build writes to: ``root`` (or ``[cache] root``), created if needed."""
    c = cfg.cache
    r = Path(root).expanduser().absolute() if root else c.root
    if r is None:
        raise ConfigError("no cache given: pass ROOT or set [cache] root in cachewatch.toml")
    same = c.root is not None and Path(os.path.abspath(c.root)) == Path(os.path.abspath(r))
    limit = max_size if max_size is not None else (c.max_size if same else None)
    if limit is None and not CacheLayout.of(r).has_index():
        raise ConfigError(
            f"cache '{r}' does not exist yet and has no size limit: set [cache] max_size or pass --max-size (e.g. 100GB)"
        )
    if same:
        return Cache(r, max_size=limit, target_ratio=c.target_ratio, target_size=c.target_size, ttl=c.ttl, sweep=False,
                     **index_kwargs(c))
    return Cache(r, max_size=limit, sweep=False)


@dataclass
class BuildJob(Job):
    """``build`` as a job: opens the cache, takes the per-cache build lock, builds."""

    root: str
    source: SourceSpec
    max_size: int | None = None
    target_ratio: float = 0.9
    target_size: int | None = None
    ttl: float | None = None
    workers: int | None = None
    keys: tuple[str, ...] | None = None  # only these keys (pre-flight builds what is missing)
    index: dict[str, Any] | None = None  # a Redis-indexed cache's index, node and lease (index_kwargs)
    kind = "build"

    @classmethod
    def from_config(cls, cfg: Config, *, root: str | None = None, max_size: int | None = None,
                    source: SourceSpec | None = None, workers: int | None = None) -> "BuildJob":
        cache = open_cache_for_build(cfg, root, max_size)
        try:
            return cls(
                root=str(cache.root),
                source=source or SourceSpec.from_config(cfg),
                max_size=cache.max_bytes,
                target_size=cache.target_bytes,
                ttl=cache.ttl_s,
                workers=workers,
                index=_index_args(cache),
            )
        finally:
            cache.close()

    def describe(self) -> str:
        return f"build {self.root} from {self.source.describe()}"

    def run(self, ctx: JobContext) -> BuildReport:
        cache = Cache(self.root, max_size=self.max_size, target_size=self.target_size, ttl=self.ttl, sweep=False,
                      **(self.index or {}))
        try:
            with exclusive_job(cache.meta_dir, "build", str(cache.root)):
                items = self.source.items()
                if self.keys is not None:
                    wanted = set(self.keys)
                    items = [it for it in items if it.key in wanted]
                return build_cache(cache, self.source, workers=self.workers, items=items, ctx=ctx)
        finally:
            cache.close()
