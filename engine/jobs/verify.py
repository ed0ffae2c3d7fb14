"""``verify``: is the cache complete for its source, and is every entry intact?

What is checked, against a snapshot of the index taken at the start:

* completeness: every source item has an entry (``missing_entry``);
* every live row has its file (``missing_file``) of the recorded size (``size_mismatch``)
  and checksum (``checksum_mismatch``; xxh3_64 as the cache records it), readable
  (``unreadable``), with the recorded inode (``inode_mismatch``: the file was put back
  by a backup restore or a copy; its content is sound);
* files in the shard directories that no row knows (``orphan_file``);
* ``.part`` files and reservations of writers that are dead (``stale_part``,
  ``stale_reservation``);
* the size counters against the rows (``counter_mismatch``).

Other processes keep using the cache meanwhile. Every suspected fault is confirmed
inside ``index.transaction()`` (which excludes writers and the evictor) before it is
reported, so an entry evicted or replaced during the scan is not a fault. Files are
hashed by a pool of threads: ``readinto`` and xxhash both release the GIL on large
chunks, so threads scale over cores without copying data between processes.

``repair=True`` fixes, each change inside its own transaction: corrupt entries are
dropped (a pinned one is moved aside by the cache, as ``Cache.delete`` does), rows
without files are removed, sound files are re-indexed (orphans whose name gives back
their key, restored inodes), dead writers' leftovers are reclaimed and the counters
are recounted. Source data is never opened for writing. Missing source items are
reported; ``build`` makes them.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cache import Cache
from ..cache.index import Row
from ..cache.integrity import CacheLayout, IndexSnapshot
from ..cache.keys import SHARD_RE, name_to_key
from ..errors import CacheRootError
from ..sizes import format_duration, format_size
from .base import CancelToken, Job, JobCancelled, JobContext
from .cache_access import HASH_CHUNK_BYTES, hash_file
from .source import SourceSpec

__all__ = ["verify_cache", "VerifyJob", "VerifyReport", "VerifyProblem", "PROBLEM_KINDS"]

PROBLEM_KINDS: dict[str, str] = {
    "missing_entry": "source item with no cache entry",
    "missing_file": "index row whose file is gone",
    "size_mismatch": "file size differs from the index",
    "checksum_mismatch": "file content differs from its checksum",
    "unreadable": "file cannot be read",
    "inode_mismatch": "file was replaced outside the cache (content sound)",
    "orphan_file": "file no index row knows",
    "stale_part": ".part file left by a dead writer",
    "stale_reservation": "space still reserved by a dead writer",
    "counter_mismatch": "size counters disagree with the entries",
    "bad_row": "index row naming a file outside the shard directories",
}
_UNSOUND = ("missing_file", "size_mismatch", "checksum_mismatch", "unreadable", "bad_row")


@dataclass(frozen=True)
class VerifyProblem:
    kind: str  # a key of PROBLEM_KINDS
    key: str | None
    path: str | None
    detail: str
    size_bytes: int = 0
    action: str | None = None  # what --repair did about it; None: still there

    @property
    def repaired(self) -> bool:
        return self.action is not None

    def describe(self) -> str:
        what = self.key if self.key is not None else (self.path or "")
        done = f"  [{self.action}]" if self.action else ""
        return f"{self.kind:<18} {what}  ({self.detail}){done}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerifyReport:
    root: str
    entries: int
    entries_checked: int
    bytes_checked: int
    checksums: bool
    repair: bool
    problems: tuple[VerifyProblem, ...]
    source: str | None = None
    source_items: int | None = None
    complete_items: int | None = None
    extra_entries: int = 0  # entries no source item maps to (not a fault: the cache may hold more)
    foreign: tuple[str, ...] = ()  # files outside the shard directories: not the cache's, left alone
    changed_during_scan: int = 0
    workers: int = 1
    duration_s: float = 0.0
    hash_duration_s: float = 0.0

    @property
    def remaining(self) -> tuple[VerifyProblem, ...]:
        return tuple(p for p in self.problems if not p.repaired)

    @property
    def ok(self) -> bool:
        return not self.remaining

    @property
    def clean(self) -> bool:
        return self.ok

    @property
    def complete(self) -> bool | None:
        if self.source_items is None:
            return None
        return self.complete_items == self.source_items

    def counts(self, *, remaining_only: bool = False) -> dict[str, int]:
        probs = self.remaining if remaining_only else self.problems
        c = Counter(p.kind for p in probs)
        return {k: c[k] for k in PROBLEM_KINDS if c[k]}

    def summary(self, *, limit: int = 10) -> str:
        lines = [f"cache     {self.root}"]
        rate = ""
        if self.checksums and self.hash_duration_s > 0:
            rate = f", {format_size(self.bytes_checked / self.hash_duration_s)}/s"
        how = "hashed" if self.checksums else "size-checked"
        lines.append(
            f"entries   {self.entries} ({self.entries_checked} {how}, {format_size(self.bytes_checked)} read"
            f"{rate}, {self.workers} threads, {format_duration(self.duration_s)})"
        )
        if self.source_items is not None:
            missing = self.source_items - (self.complete_items or 0)
            lines.append(
                f"source    {self.source}: {self.complete_items} of {self.source_items} items cached"
                + (f", {missing} missing" if missing else ", complete")
            )
        if self.changed_during_scan:
            lines.append(f"changed   {self.changed_during_scan} entries were evicted or rewritten by others during the scan")
        if self.foreign:
            lines.append(f"foreign   {len(self.foreign)} files outside the shard directories (not the cache's; left alone)")
        if not self.problems:
            lines.append("result    clean")
            return "\n".join(lines)
        counts = self.counts()
        lines.append(
            f"problems  {len(self.problems)}: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
        )
        shown = sorted(self.problems, key=lambda p: (p.kind == "missing_entry", p.kind, p.key or p.path or ""))
        for p in shown[:limit]:
            lines.append(f"  {p.describe()}")
        if len(shown) > limit:
            lines.append(f"  ... and {len(shown) - limit} more (--json lists them all)")
        rest = self.remaining
        if not rest:
            lines.append("result    repaired; the cache is clean")
        else:
            advice = []
            kinds = {p.kind for p in rest}
            if kinds - {"missing_entry"}:
                advice.append("run `cachewatch verify --repair` to drop corrupt entries and re-index sound files")
            if "missing_entry" in kinds:
                advice.append("run `cachewatch build` to make the missing entries")
            lines.append(f"result    {len(rest)} problems remain; " + "; then ".join(advice))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["problems"] = [p.to_json() for p in self.problems]
        out["foreign"] = list(self.foreign)
        out["ok"] = self.ok
        out["complete"] = self.complete
        out["counts"] = self.counts()
        out["remaining"] = self.counts(remaining_only=True)
        return out


# ------------------------------------------------------------------------------------ scanning
@dataclass
class _Snapshot:
    live: list[Row]
    writing: list[Row]
    replaced: list[Row]
    counters: Any
    disk_names: list[str]
    foreign: list[str]
    parts: list[str]  # paths of .part files (tmp/) and evicted files not yet unlinked (trash/)
    block_bytes: int
    max_bytes: int | None


def _scan(paths: CacheLayout, cache: Cache) -> _Snapshot:
    snap: IndexSnapshot = cache.snapshot()
    live, writing, replaced, counters = list(snap.live), list(snap.writing), list(snap.replaced), snap.counters
    disk: list[str] = []
    foreign: list[str] = []
    for top in os.scandir(paths.root):
        if top.name == paths.meta.name:
            continue
        if SHARD_RE.match(top.name) and top.is_dir(follow_symlinks=False):
            for entry in os.scandir(top.path):
                disk.append(f"{top.name}/{entry.name}")
        else:
            foreign.append(top.name)
    return _Snapshot(live, writing, replaced, counters, sorted(disk), sorted(foreign), [], snap.block_bytes, snap.max_bytes)


@dataclass
class _Checked:
    row: Row
    status: str  # "ok" | "missing" | "unreadable" | "size" | "checksum" | "inode"
    ino: int | None = None
    size: int | None = None
    digest: str | None = None
    error: str = ""


def _safe_name(name: str) -> bool:
    """A row's file must be ``<shard>/<file>`` inside the root; anything else is never opened."""
    parts = name.split("/")
    return len(parts) == 2 and bool(SHARD_RE.match(parts[0])) and parts[1] not in ("", ".", "..") and "\x00" not in name


def _check_row(root: Path, row: Row, checksums: bool, local: threading.local, token: CancelToken, on_bytes) -> _Checked:
    if not _safe_name(row.name):
        return _Checked(row, "bad_row")
    path = root / row.name
    if not checksums:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return _Checked(row, "missing")
        except OSError as exc:
            return _Checked(row, "unreadable", error=exc.strerror or str(exc))
        on_bytes(0)
        if st.st_size != row.size:
            return _Checked(row, "size", st.st_ino, st.st_size)
        return _Checked(row, "ok" if st.st_ino == row.ino else "inode", st.st_ino, st.st_size)
    buf = getattr(local, "buf", None)
    if buf is None:
        buf = local.buf = bytearray(HASH_CHUNK_BYTES)
    try:
        st = os.lstat(path)
        if st.st_size != row.size:
            return _Checked(row, "size", st.st_ino, st.st_size)
        ino, size, digest = hash_file(path, buf, token, on_bytes)
    except FileNotFoundError:
        return _Checked(row, "missing")
    except JobCancelled:
        raise
    except OSError as exc:
        return _Checked(row, "unreadable", error=exc.strerror or str(exc))
    if size != row.size:
        return _Checked(row, "size", ino, size, digest)
    if digest != row.checksum:
        return _Checked(row, "checksum", ino, size, digest)
    if ino != row.ino:
        return _Checked(row, "inode", ino, size, digest)
    return _Checked(row, "ok", ino, size, digest)


class _EitherToken(CancelToken):
    def __init__(self, outer: CancelToken) -> None:
        super().__init__()
        self._outer = outer

    def stop(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or self._outer.cancelled

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled("cancelled; nothing half-done was left behind")


def _hash_all(
    root: Path, rows: list[Row], checksums: bool, workers: int, ctx: JobContext
) -> tuple[list[_Checked], int, float]:
    total_bytes = sum(r.size for r in rows)
    lock = threading.Lock()
    state = {"bytes": 0, "files": 0}
    local = threading.local()

    def on_bytes(n: int) -> None:
        with lock:
            state["bytes"] += n
        ctx.progress("hash", state["files"], len(rows), unit="files", bytes_done=state["bytes"], bytes_total=total_bytes if checksums else None)

    suspects: list[_Checked] = []
    stop = _EitherToken(ctx.token)  # an error in one thread stops the others without cancelling the job
    t0 = time.perf_counter()
    window = max(4, workers * 4)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cachewatch-verify") as pool:
        pending: set = set()
        it = iter(rows)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    row = next(it, None)
                    if row is None:
                        exhausted = True
                        break
                    pending.add(pool.submit(_check_row, root, row, checksums, local, stop, on_bytes))
                if not pending:
                    break
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    res = fut.result()
                    with lock:
                        state["files"] += 1
                    if res.status != "ok":
                        suspects.append(res)
                ctx.check()
        except BaseException:
            stop.stop()
            for fut in pending:
                fut.cancel()
            raise
    ctx.progress("hash", len(rows), len(rows), unit="files", bytes_done=state["bytes"],
                 bytes_total=total_bytes if checksums else None, force=True)
    return suspects, state["bytes"], time.perf_counter() - t0


# ------------------------------------------------------------------------------------ the job
def verify_cache(
    root: str | os.PathLike,
    *,
    source: SourceSpec | None = None,
    repair: bool = False,
    workers: int | None = None,
    checksums: bool = True,
    max_size: int | None = None,
    ctx: JobContext | None = None,
) -> VerifyReport:
    """Check (and with ``repair`` fix) the cache at ``root``. See the module docstring.

    A cache whose index was lost (deleted, or moved aside because it was corrupt) is
    re-indexed from its files by ``repair=True``; ``max_size`` is then needed, since the
    limits lived in the index.
    """
    ctx = ctx or JobContext("verify", "verify")
    t_start = time.perf_counter()
    workers = max(1, workers or os.cpu_count() or 1)
    paths = CacheLayout.existing(root, index_may_be_missing=repair)
    if repair and paths.index_unusable():  # missing, 0 bytes, or no cachewatch schema in it
        if max_size is None:
            raise CacheRootError(
                f"cache '{paths.root}' has no usable index; pass --max-size (e.g. 100GB) with --repair to re-index its files"
            )
        Cache(paths.root, max_size=max_size, sweep=False, new_index_over_files=True).close()  # every file is then an orphan
        ctx.warn(f"cache '{paths.root}' had no index: a new one was made and every sound file will be re-indexed")
    items = source.require().items() if source is not None else None
    problems: list[VerifyProblem] = []
    changed = 0

    # Read-only first: dead writers' leftovers are judged before a writing open would reclaim them.
    with Cache(paths.root, readonly=True, sweep=False) as ro:
        snap = _scan(paths, ro)
        ctx.check()
        stale_parts = ro.stale_files()
        stale_rows = ro.dead_writing_rows()  # older caches
        stale_slots = [sl for sl in ro.writers() if sl.stale]
    for part in stale_parts:
        try:
            size = os.lstat(part).st_size
        except FileNotFoundError:
            continue
        what = "an evicted file its writer died before unlinking" if Path(part).parent == paths.trash else "left by a writer that died"
        problems.append(VerifyProblem("stale_part", None, part, what, size))
    for r in stale_rows:
        problems.append(
            VerifyProblem("stale_reservation", r.key, None, f"{format_size(r.charge)} reserved by dead writer {r.owner}", r.charge)
        )
    for sl in stale_slots:
        detail = f"{format_size(sl.reserved_bytes)} reserved by dead writer {sl.token} (ledger slot {sl.index})"
        if sl.intent:
            detail += f", which was renaming a file to {sl.intent}"
        problems.append(VerifyProblem("stale_reservation", None, f"ledger:{sl.index}:{sl.token}", detail, sl.reserved_bytes))

    # With --repair a writing open: it reclaims dead writers' reservations and .part files (the
    # cache's own recovery). Without, a read-only one that changes nothing.
    cache: Cache | None = Cache(paths.root, sweep=False) if repair else None
    view = cache if cache is not None else Cache(paths.root, readonly=True, sweep=False)
    try:
        suspects, bytes_read, hash_s = _hash_all(paths.root, snap.live, checksums, workers, ctx)
        ctx.check()

        # ------------------------------------------------ confirm (and repair) entry faults
        ctx.progress("confirm", 0, len(suspects), message="confirming faults under the index lock")
        for i, s in enumerate(suspects):
            ctx.check()
            prob, was_changed = _confirm_entry(paths.root, view, cache is not None, s)
            changed += was_changed
            if prob is not None:
                problems.append(prob)
            ctx.progress("confirm", i + 1, len(suspects))

        # ------------------------------------------------ orphans
        known = {r.name for r in snap.live} | {r.name for r in snap.replaced}
        # Newest version first: of two orphaned versions of one key (a Redis index rebuilt from the
        # files), the one with the higher fence is adopted and the older deleted.
        candidates = sorted((n for n in snap.disk_names if n not in known), reverse=True)
        ctx.progress("orphans", 0, len(candidates))
        hash_buf = bytearray(HASH_CHUNK_BYTES)
        for i, name in enumerate(candidates):
            ctx.check()
            prob = _confirm_orphan(paths.root, view, cache is not None, name, hash_buf, ctx.token, snap)
            if prob is not None:
                problems.append(prob)
            ctx.progress("orphans", i + 1, len(candidates))

        # ------------------------------------------------ dead writers: the cache's recovery did it
        if cache is not None:
            if any(p.kind in ("stale_part", "stale_reservation") for p in problems):
                cache.recover()
            fixed: list[VerifyProblem] = []
            slots_now = {(sl.index, sl.token) for sl in cache.writers()}
            still_stale = set(cache.stale_files())
            for p in problems:
                if p.kind == "stale_part":
                    part = Path(p.path or "")
                    if str(part) in still_stale:
                        try:
                            part.unlink()  # the cache's recovery judged its owner dead and did not get to it
                        except FileNotFoundError:
                            pass
                    p = _with_action(p, "removed") if not part.exists() else p
                elif p.kind == "stale_reservation" and p.path and p.path.startswith("ledger:"):
                    _, index, token = p.path.split(":", 2)
                    if (int(index), token) not in slots_now:
                        p = _with_action(p, "released")
                elif p.kind == "stale_reservation":
                    row = next((r for r in stale_rows if r.key == p.key), None)
                    if row is not None:
                        with cache.surgery() as surg:
                            if not surg.row_present(row):
                                p = _with_action(p, "released")
                fixed.append(p)
            problems = fixed

        # ------------------------------------------------ counters
        prob = _check_counters(view, snap, repair=cache is not None)
        if prob is not None:
            problems.append(prob)
        elif cache is not None and any(p.repaired for p in problems):
            with cache.surgery() as surg:
                surg.recount()

        # ------------------------------------------------ completeness, from a fresh look at the index
        complete = extra = None
        if items is not None:
            fresh = {r.key for r in view.snapshot().live}
            unsound = {p.key for p in problems if p.kind in _UNSOUND and not p.repaired}
            source_keys = {it.key for it in items}
            complete = 0
            for it in items:
                if it.key in fresh and it.key not in unsound:
                    complete += 1
                else:
                    problems.append(VerifyProblem("missing_entry", it.key, str(it.path), f"source item {it.relpath}", it.size_bytes))
            extra = len(fresh - source_keys)
    finally:
        view.close()

    return VerifyReport(
        root=str(paths.root),
        entries=len(snap.live),
        entries_checked=len(snap.live),
        bytes_checked=bytes_read,
        checksums=checksums,
        repair=repair,
        problems=tuple(problems),
        source=source.describe() if source is not None else None,
        source_items=len(items) if items is not None else None,
        complete_items=complete,
        extra_entries=extra or 0,
        foreign=tuple(snap.foreign),
        changed_during_scan=changed,
        workers=workers,
        duration_s=time.perf_counter() - t_start,
        hash_duration_s=hash_s,
    )


def _identity(row: Row) -> tuple:
    # Not the id alone: SQLite hands a deleted row's id to the next insert, and a rewrite
    # deletes the old row and inserts the new one in one transaction.
    return (row.id, row.name, row.ino, row.size, row.checksum, row.created)


def _with_action(p: VerifyProblem, action: str) -> VerifyProblem:
    return VerifyProblem(p.kind, p.key, p.path, p.detail, p.size_bytes, action)


def _confirm_entry(root: Path, view: Cache, fix: bool, s: _Checked) -> tuple[VerifyProblem | None, int]:
    """Re-check one suspect under the index lock; repair it there when ``cache`` is given."""
    row = s.row
    path = root / row.name
    with view.surgery() as surg:
        cur = surg.live_row(row.key)
        if cur is None or _identity(cur) != _identity(row):
            return None, 1  # evicted, deleted or rewritten since the snapshot: not a fault
        if s.status == "bad_row":
            prob = VerifyProblem("bad_row", row.key, None, f"name {row.name!r} is not inside a shard directory", row.size)
            if fix:  # the row goes; whatever file it names is not touched
                surg.drop_row(row)
                prob = _with_action(prob, "row removed")
            return prob, 0
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        if s.status == "missing" or st is None:
            if st is not None:
                return None, 1
            prob = VerifyProblem("missing_file", row.key, str(path), "the index lists it but the file is gone", row.size)
            if fix:
                surg.drop_row(row)
                prob = _with_action(prob, "row removed")
            return prob, 0
        if s.ino is not None and st.st_ino != s.ino:
            return None, 1  # the file changed after we read it; the next verify looks again
        if s.status == "unreadable":
            prob = VerifyProblem("unreadable", row.key, str(path), s.error or "read failed", row.size)
        elif s.status == "size":
            prob = VerifyProblem("size_mismatch", row.key, str(path), f"index says {row.size} bytes, file has {s.size}", row.size)
        elif s.status == "checksum":
            prob = VerifyProblem("checksum_mismatch", row.key, str(path), f"expected xxh3 {row.checksum}, got {s.digest}", row.size)
        elif s.status == "inode":
            prob = VerifyProblem("inode_mismatch", row.key, str(path), f"index inode {row.ino}, file inode {st.st_ino}; content matches", row.size)
            if fix:
                digest = s.digest if s.digest is not None else row.checksum
                surg.reindex(row, st.st_ino, digest or "")
                prob = _with_action(prob, "re-indexed")
            return prob, 0
        else:  # pragma: no cover
            return None, 0
        if fix:
            surg.drop_entry(row.key)  # as Cache.delete: a pinned file stays where it is, still counted
            prob = _with_action(prob, "dropped")
        return prob, 0


def _confirm_orphan(
    root: Path, view: Cache, fix: bool, name: str, buf: bytearray, token: CancelToken, snap: _Snapshot
) -> VerifyProblem | None:
    path = root / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        return None  # a directory inside a shard is not something the cache writes; leave it alone
    is_link = _stat.S_ISLNK(st.st_mode)
    digest = None
    ino = st.st_ino
    if not is_link and _stat.S_ISREG(st.st_mode):
        try:
            ino, _, digest = hash_file(path, buf, token)
        except FileNotFoundError:
            return None
        except OSError:
            digest = None
    with view.surgery() as surg:
        if surg.owned_name(name) or surg.journaled(name):
            return None  # committed since the snapshot, an old version a reader still pins, or a put not indexed yet
        try:
            st2 = os.lstat(path)
        except FileNotFoundError:
            return None
        if st2.st_ino != ino or st2.st_size != st.st_size:
            return None
        key = name_to_key(name)
        kind_detail = "a symlink" if is_link else "no index row"
        prob = VerifyProblem("orphan_file", key, str(path), kind_detail, st.st_size)
        if not fix:
            return prob
        if is_link or digest is None or key is None or surg.live_row(key) is not None:
            why = "symlink removed" if is_link else ("deleted (name does not give back a key)" if key is None else "deleted")
            os.unlink(path)
            return _with_action(prob, why)
        if not surg.adopt_orphan(key, name, st.st_size, ino, digest):
            os.unlink(path)
            return _with_action(prob, "deleted (no room under max_size)")
        return _with_action(prob, "re-indexed")


def _check_counters(view: Cache, snap: _Snapshot, *, repair: bool) -> VerifyProblem | None:
    first = IndexSnapshot(tuple(snap.live), tuple(snap.writing), tuple(snap.replaced), snap.counters, snap.block_bytes, snap.max_bytes)
    if not first.counter_differences() and not repair:
        return None
    with view.surgery() as surg:
        diff = surg.counter_differences()
        if not diff:
            return None
        prob = VerifyProblem("counter_mismatch", None, None, "; ".join(diff))
        if repair:
            surg.recount()
            prob = _with_action(prob, "recounted")
        return prob


@dataclass
class VerifyJob(Job):
    """``verify`` as a job (see :func:`verify_cache`)."""

    root: str
    source: SourceSpec | None = None
    repair: bool = False
    workers: int | None = None
    checksums: bool = True
    max_size: int | None = None
    kind = "verify"

    def describe(self) -> str:
        return f"{'verify --repair' if self.repair else 'verify'} {self.root}"

    def run(self, ctx: JobContext) -> VerifyReport:
        return verify_cache(
            self.root, source=self.source, repair=self.repair, workers=self.workers, checksums=self.checksums,
            max_size=self.max_size, ctx=ctx,
        )
