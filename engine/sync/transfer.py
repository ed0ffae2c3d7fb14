"""Push a cache to a remote and pull it back: plain functions with a progress callback.

Push: list what the remote already holds (one listing, no per-object request), hash and
upload in parallel only the entries whose object is missing, then create the next
manifest (create-only). An unchanged cache costs one listing and one manifest read. A
push killed midway left whole objects and no manifest: the next push skips those objects.

Pull: read the newest manifest, refuse it before any download if its entries could never
fit under the cache's ``max_size``, then fetch in parallel only the entries the cache does
not already hold with the same hash. Every object is hashed and compared with the
manifest *before* it is stored, and is stored through :meth:`Cache.put` /
:meth:`Cache.put_file`, the same path every writer takes: the bound, the eviction and the
crash safety of the cache apply unchanged. A pull killed midway left whole entries; the
next pull skips them.

Memory stays bounded: at most ``2 x workers`` objects are in flight, objects up to
``INLINE_MAX_BYTES`` travel in memory and larger ones through a file (a staging file in the
cache's own directory on pull, so that ``put_file(move=True)`` links it instead of copying).
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import xxhash

from .._version import __version__
from ..errors import CacheError
from ..osutil import pid_alive as _pid_alive
from ..sizes import format_duration, format_size
from .errors import ForeignObject, ManifestTooLarge, NoManifest, RemoteConfigError, SyncError
from .manifest import Manifest, ManifestEntry, SourceFingerprint, manifest_name, object_name
from .remote import Remote

__all__ = ["push", "pull", "SyncProgress", "SyncReport", "INLINE_MAX_BYTES", "DEFAULT_WORKERS", "read_latest_manifest"]

INLINE_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_WORKERS = 16
_CHUNK = 1 << 20
_PROBLEMS_KEPT = 20
_PROGRESS_EVERY_S = 0.25
_MANIFEST_TRIES = 100

T = TypeVar("T")


@dataclass(frozen=True)
class SyncProgress:
    direction: str  # "push" or "pull"
    phase: str  # "listing", "uploading", "downloading", "committing"
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    elapsed_s: float  # since the transfer phase began
    rate_bytes_per_s: float | None
    eta_s: float | None

    def line(self) -> str:
        parts = [self.direction, self.phase, f"{self.files_done}/{self.files_total} files",
                 f"{format_size(self.bytes_done)} of {format_size(self.bytes_total)}"]
        if self.rate_bytes_per_s:
            parts.append(f"{format_size(self.rate_bytes_per_s)}/s")
        if self.eta_s is not None:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return "  ".join(parts)


@dataclass(frozen=True)
class SyncReport:
    direction: str
    url: str
    root: str
    dry_run: bool
    manifest_seq: int | None  # the manifest pushed or pulled (the existing one when up to date)
    files_total: int  # entries of the manifest
    bytes_total: int
    files_transferred: int  # (with dry_run: that would be)
    bytes_transferred: int
    files_skipped: int  # already there with the same hash
    bytes_skipped: int
    committed: bool  # push: a new manifest was created
    up_to_date: bool  # push: the remote already had this exact cache; pull: nothing to fetch
    cancelled: bool
    problem_count: int
    problems: tuple[str, ...]  # the first few, one line each
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0
    source: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and not self.cancelled

    def summary(self) -> str:
        verb = {"push": ("uploaded", "would upload"), "pull": ("downloaded", "would download")}[self.direction][self.dry_run]
        moved = f"{verb} {self.files_transferred} files ({format_size(self.bytes_transferred, binary=False)})"
        skipped = f"{self.files_skipped} already there"
        head = f"{self.direction} {self.root} {'->' if self.direction == 'push' else '<-'} {self.url}: {moved}, {skipped}"
        if self.cancelled:
            tail = "cancelled; run it again to resume"
        elif self.problem_count:
            tail = f"{self.problem_count} problems" + ("; nothing committed, fix them and push again" if self.direction == "push" else "")
        elif self.direction == "push" and self.dry_run:
            tail = "dry run, nothing written"
        elif self.direction == "push":
            tail = (f"remote already up to date (manifest {self.manifest_seq})" if self.up_to_date
                    else f"committed manifest {self.manifest_seq}")
        else:
            tail = (f"dry run of manifest {self.manifest_seq}" if self.dry_run
                    else f"cache matches manifest {self.manifest_seq}")
        return f"{head}; {tail} in {format_duration(self.duration_s)}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = list(self.problems)
        out["notes"] = list(self.notes)
        out["ok"] = self.ok
        return out


ProgressFn = Callable[[SyncProgress], None]
CancelledFn = Callable[[], bool]


class _Meter:
    """Counts done work and calls the progress callback at most every 0.25 s (from the caller's thread)."""

    def __init__(self, direction: str, on_progress: ProgressFn | None, files_total: int, bytes_total: int) -> None:
        self.direction = direction
        self.on_progress = on_progress
        self.files_total, self.bytes_total = files_total, bytes_total
        self.files_done = self.bytes_done = 0
        self.started = time.monotonic()
        self._last = 0.0

    def phase(self, name: str) -> None:
        self.report(name, force=True)

    def add(self, files: int, nbytes: int) -> None:
        self.files_done += files
        self.bytes_done += nbytes

    def report(self, phase: str, *, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        elapsed = now - self.started
        rate = eta = None
        if elapsed > 0.5 and self.bytes_done:
            rate = self.bytes_done / elapsed
            eta = max(0.0, (self.bytes_total - self.bytes_done) / rate)
        self.on_progress(SyncProgress(self.direction, phase, self.files_done, self.files_total, self.bytes_done,
                                      self.bytes_total, elapsed, rate, eta))


class _Problems:
    def __init__(self) -> None:
        self.count = 0
        self.kept: list[str] = []

    def add(self, line: str) -> None:
        self.count += 1
        if len(self.kept) < _PROBLEMS_KEPT:
            self.kept.append(line)


def _run_parallel(
    items: Iterable[T],
    work: Callable[[T], Any],
    on_done: Callable[[T, Any, BaseException | None], None],
    *,
    workers: int,
    cancelled: CancelledFn,
    tick: Callable[[], None],
) -> bool:
    """Run ``work`` over ``items`` with at most ``2 x workers`` in flight; False if cancelled.

    A :class:`RemoteConfigError` (credentials, bucket) stops everything and is raised: every
    other object would fail the same way.
    """
    fatal: BaseException | None = None
    it: Iterator[T] = iter(items)
    inflight: dict[Future[Any], T] = {}
    stopped = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cachewatch-sync") as pool:
        while True:
            while not stopped and len(inflight) < 2 * workers:
                if cancelled() or fatal is not None:
                    stopped = True
                    break
                item = next(it, None)
                if item is None:
                    break
                inflight[pool.submit(work, item)] = item
            if not inflight:
                break
            done, _ = wait(inflight, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                item = inflight.pop(fut)
                exc = fut.exception()
                if isinstance(exc, RemoteConfigError):
                    fatal = fatal or exc
                    continue
                on_done(item, None if exc else fut.result(), exc)
            tick()
    if fatal is not None:
        raise fatal
    return not stopped or not cancelled()


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------------------------------ push
@dataclass
class _Upload:
    key: str
    path: Path
    size_bytes: int
    xxh3: str | None  # what the index says


def read_latest_manifest(remote: Remote) -> tuple[int, Manifest] | None:
    seq = remote.latest_manifest_seq()
    if seq is None:
        return None
    name = manifest_name(seq)
    return seq, Manifest.from_bytes(remote.get_bytes(name), f"{remote.url}/{name}")


def push(
    cache: Any,
    remote: Remote,
    *,
    source: SourceFingerprint | None = None,
    workers: int = DEFAULT_WORKERS,
    dry_run: bool = False,
    check_remote: bool = False,
    on_progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> SyncReport:
    """Upload what the remote lacks of ``cache`` (a :class:`~cachewatch.engine.cache.Cache`), then commit a manifest.

    ``check_remote`` lists the remote's objects even when the newest manifest covers every
    entry (objects deleted at the remote behind cachewatch's back are then sent again).
    """
    t0 = time.monotonic()
    cancelled = cancelled or (lambda: False)
    meter = _Meter("push", on_progress, 0, 0)
    entries = cache.entries("key")
    latest = read_latest_manifest(remote)
    # Objects a committed manifest names were all stored before it was created: no need to list
    # them again. Only entries it does not cover (new, changed, or left by an interrupted push)
    # cost a listing, so an unchanged push is one manifest read, whatever the size of the cache.
    present: dict[str, int] = {} if latest is None else {e.object: e.size_bytes for e in latest[1].entries}
    if check_remote or any(not e.checksum or object_name(e.checksum, e.size_bytes) not in present for e in entries):
        present = {name: size for name, size in remote.list_objects()}

    final: dict[str, tuple[int, str]] = {}  # key -> (size, xxh3) of what the manifest will say
    todo: list[_Upload] = []
    skipped_bytes = 0
    for e in entries:
        if e.checksum and present.get(object_name(e.checksum, e.size_bytes)) == e.size_bytes:
            final[e.key] = (e.size_bytes, e.checksum)
            skipped_bytes += e.size_bytes
        else:
            todo.append(_Upload(e.key, e.path, e.size_bytes, e.checksum))
    meter.files_total, meter.bytes_total = len(todo), sum(u.size_bytes for u in todo)
    problems = _Problems()
    notes: list[str] = []
    src_json = None if source is None else source.to_json()

    def report(**kw: Any) -> SyncReport:
        base: dict[str, Any] = dict(
            direction="push", url=remote.url, root=str(cache.root), dry_run=dry_run, manifest_seq=None,
            files_total=len(entries), bytes_total=sum(e.size_bytes for e in entries),
            files_transferred=meter.files_done, bytes_transferred=meter.bytes_done,
            files_skipped=len(entries) - len(todo), bytes_skipped=skipped_bytes, committed=False, up_to_date=False,
            cancelled=False, problem_count=problems.count, problems=tuple(problems.kept), notes=tuple(notes),
            duration_s=time.monotonic() - t0, source=src_json,
        )
        base.update(kw)
        return SyncReport(**base)

    if dry_run:
        would = Manifest(tuple(ManifestEntry(e.key, e.size_bytes, e.checksum or "") for e in entries), __version__, source)
        up = not todo and latest is not None and would.same_content(latest[1])
        return report(files_transferred=len(todo), bytes_transferred=meter.bytes_total, up_to_date=up,
                      manifest_seq=latest[0] if latest else None)

    sent: set[str] = set()  # objects this push already stored: equal content under two keys goes up once

    def upload(u: _Upload) -> tuple[int, str] | None:
        for _attempt in range(3):
            try:
                fh = open(u.path, "rb")
            except FileNotFoundError:
                now = cache.entry(u.key)
                if now is None:
                    return None  # evicted since the listing: it simply is not part of this push
                u = _Upload(u.key, now.path, now.size_bytes, now.checksum)
                continue
            with fh:
                # The open descriptor keeps this inode readable even if the entry is evicted or
                # replaced meanwhile (entry files are never written in place), so what is hashed
                # is what goes up.
                size = os.fstat(fh.fileno()).st_size
                if size <= INLINE_MAX_BYTES:
                    data = fh.read()
                    h = xxhash.xxh3_64_hexdigest(data)
                else:
                    data = None
                    hasher = xxhash.xxh3_64()
                    while chunk := fh.read(_CHUNK):
                        hasher.update(chunk)
                    h = hasher.hexdigest()
                if u.xxh3 is not None and (h != u.xxh3 or size != u.size_bytes):
                    now = cache.entry(u.key)
                    if now is not None and (now.path != u.path or now.checksum != u.xxh3):
                        u = _Upload(u.key, now.path, now.size_bytes, now.checksum)
                        continue  # replaced while we read it: push the new version
                    raise CacheError(
                        f"local entry {u.key!r} ({u.path}) does not match its checksum ({h} != {u.xxh3}); "
                        f"run `cachewatch verify {cache.root} --repair`, then push again"
                    )
                name = object_name(h, size)
                if name in sent or present.get(name) == size:
                    return size, h
                if data is not None:
                    remote.put_bytes(name, data, h)
                else:
                    remote.put_file(name, f"/proc/self/fd/{fh.fileno()}", size, h)
                sent.add(name)
                return size, h
        raise CacheError(f"entry {u.key!r} kept changing while it was pushed; push again when the cache is quiet")

    def done(u: _Upload, result: tuple[int, str] | None, exc: BaseException | None) -> None:
        if exc is not None:
            problems.add(f"{u.key}: {_describe_error(exc)}")
            return
        meter.add(1, u.size_bytes)
        if result is None:
            notes.append(f"{u.key} was evicted during the push and is not in the manifest")
        else:
            final[u.key] = result

    meter.phase("uploading")
    finished = _run_parallel(todo, upload, done, workers=workers, cancelled=cancelled, tick=lambda: meter.report("uploading"))
    meter.report("uploading", force=True)
    if not finished:
        return report(cancelled=True)
    if problems.count:
        return report()

    manifest = Manifest(
        tuple(ManifestEntry(k, s, h) for k, (s, h) in sorted(final.items())), __version__, source, time.time(), str(cache.root)
    )
    if latest is not None and manifest.same_content(latest[1]):
        return report(up_to_date=True, manifest_seq=latest[0])
    meter.phase("committing")
    data = manifest.to_bytes()
    seq = (latest[0] if latest else 0) + 1
    for _ in range(_MANIFEST_TRIES):
        if remote.create_manifest(manifest_name(seq), data):
            return report(committed=True, manifest_seq=seq)
        seq += 1  # another push committed this number first: ours goes after it
    raise SyncError(f"could not create a manifest at {remote.url} after {_MANIFEST_TRIES} tries; is another push looping?")


# ------------------------------------------------------------------------------------------ pull
def _staging_dir(cache: Any) -> Path:
    """Large objects land here first: the cache's own filesystem, so put_file(move=True) links them."""
    d = Path(cache.meta_dir) / "sync-staging"
    d.mkdir(exist_ok=True)
    for p in d.iterdir():  # files of a pull that died (kill -9): its pid is gone
        pid = p.name.split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    return d


def pull(
    cache: Any,
    remote: Remote,
    *,
    workers: int = DEFAULT_WORKERS,
    dry_run: bool = False,
    on_progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> SyncReport:
    """Fetch into ``cache`` every entry of the remote's newest manifest that it does not already hold."""
    t0 = time.monotonic()
    cancelled = cancelled or (lambda: False)
    meter = _Meter("pull", on_progress, 0, 0)
    latest = read_latest_manifest(remote)
    if latest is None:
        raise NoManifest(f"nothing has been pushed to {remote.url} yet (no manifest); run `cachewatch cache push` where the cache was built")
    seq, manifest = latest
    stats = cache.stats()
    need = manifest.charge_bytes(stats.block_bytes)
    if need > stats.max_bytes:
        raise ManifestTooLarge(
            f"manifest {seq} at {remote.url} holds {len(manifest.entries)} entries taking {format_size(need, binary=False)} on disk, "
            f"more than max_size {format_size(stats.max_bytes, binary=False)} of cache {cache.root}; raise [cache] max_size "
            f"(or --max-size for a new cache) to at least that; nothing was downloaded"
        )
    have = {e.key: e for e in cache.entries("key")}
    todo: list[ManifestEntry] = []
    skipped_bytes = 0
    for me in manifest.entries:
        e = have.get(me.key)
        if e is not None and e.checksum == me.xxh3 and e.size_bytes == me.size_bytes:
            skipped_bytes += me.size_bytes
        else:
            todo.append(me)
    del have
    meter.files_total, meter.bytes_total = len(todo), sum(m.size_bytes for m in todo)
    problems = _Problems()
    notes: list[str] = []
    if need > stats.target_bytes:
        notes.append(
            f"the manifest takes {format_size(need, binary=False)}, above the cache's eviction target "
            f"{format_size(stats.target_bytes, binary=False)}: entries may be evicted while it is pulled"
        )

    def report(**kw: Any) -> SyncReport:
        base: dict[str, Any] = dict(
            direction="pull", url=remote.url, root=str(cache.root), dry_run=dry_run, manifest_seq=seq,
            files_total=len(manifest.entries), bytes_total=manifest.data_bytes,
            files_transferred=meter.files_done, bytes_transferred=meter.bytes_done,
            files_skipped=len(manifest.entries) - len(todo), bytes_skipped=skipped_bytes, committed=False,
            up_to_date=not todo, cancelled=False, problem_count=problems.count, problems=tuple(problems.kept),
            notes=tuple(notes), duration_s=time.monotonic() - t0,
            source=None if manifest.source is None else manifest.source.to_json(),
        )
        base.update(kw)
        return SyncReport(**base)

    if dry_run:
        return report(files_transferred=len(todo), bytes_transferred=meter.bytes_total)
    staging = _staging_dir(cache) if any(m.size_bytes > INLINE_MAX_BYTES for m in todo) else None

    def refuse(me: ManifestEntry, size: int, h: str) -> ForeignObject:
        return ForeignObject(
            f"object {me.object} at {remote.url} is corrupt or foreign: {size} bytes hashing to {h}, the manifest says "
            f"{me.size_bytes} bytes hashing to {me.xxh3}; nothing was stored for key {me.key!r} (push it again from a sound cache)"
        )

    def fetch(me: ManifestEntry) -> None:
        if me.size_bytes <= INLINE_MAX_BYTES:
            data = remote.get_bytes(me.object)
            h = xxhash.xxh3_64_hexdigest(data)
            if len(data) != me.size_bytes or h != me.xxh3:
                raise refuse(me, len(data), h)
            cache.put(me.key, data)
            return
        assert staging is not None
        tmp = staging / f"{os.getpid()}-{uuid.uuid4().hex}"
        try:
            remote.get_file(me.object, str(tmp))
            hasher = xxhash.xxh3_64()
            size = 0
            with open(tmp, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
            if size != me.size_bytes or hasher.hexdigest() != me.xxh3:
                raise refuse(me, size, hasher.hexdigest())
            cache.put_file(me.key, tmp, move=True)
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

    def done(me: ManifestEntry, _result: Any, exc: BaseException | None) -> None:
        if exc is not None:
            problems.add(str(exc) if isinstance(exc, ForeignObject) else f"{me.key}: {_describe_error(exc)}")
            return
        meter.add(1, me.size_bytes)

    meter.phase("downloading")
    finished = _run_parallel(todo, fetch, done, workers=workers, cancelled=cancelled, tick=lambda: meter.report("downloading"))
    meter.report("downloading", force=True)
    return report(cancelled=not finished, up_to_date=False if todo else True)


def source_fingerprint(describe: str, template: str, items: Iterable[tuple[str, str, int]]) -> SourceFingerprint:
    """A fingerprint of ``[source]``: the key template and every item's (key, relpath, size), sorted."""
    h = xxhash.xxh3_128()
    h.update(template.encode() + b"\n")
    n = 0
    for key, relpath, size in sorted(items):
        h.update(f"{key}\0{relpath}\0{size}\n".encode())
        n += 1
    return SourceFingerprint(describe, n, h.hexdigest())
