"""``split``: big batch files into smaller ones, safely (seed 002's ``divide_conquer.py``, grown up).

Same options and naming as the seed: ``--traces-per-batch/-n`` (250), ``--no-compress``,
``--delete-original``, ``--no-validate``, ``--pattern`` (``*.pkl*``), ``--quiet``; a file
or a directory as input; outputs ``NAME_sub0000.pkl.gz``, ``NAME_sub0001.pkl.gz``, ...
Formats: pickles of lists (``.pkl``, ``.pkl.gz``), NumPy ``.npy`` / ``.npz`` and torch
``.pt`` (tensors along the first axis, or lists).

Safety, for each input in turn:

1. every sub-batch is written to ``NAME_subKKKK.EXT.<pid>.part``;
2. each is loaded back and compared with the original, item by item (unless
   ``--no-validate``), and the counts must add up;
3. only when *all* sub-batches of the input are written and validated are the ``.part``
   files renamed to their final names: outputs never appear incomplete;
4. only then, and only if the user confirmed ``--delete-original``, is the input deleted
   (after an ``fsync`` of the outputs, so a power cut cannot lose both).

On any failure or cancel, this input's ``.part`` files are removed and the input is left
as it was. A directory run carries on with the next input and reports the failures.
**Pickle files run code when loaded: split only files from a trusted source.**
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..osutil import fsync_dir as _fsync_dir, pid_alive as _pid_alive
from ..sizes import format_duration, format_size
from .base import Job, JobCancelled, JobContext
from .recommend import Recommendation, recommend
from .split_formats import FORMATS, FormatInfo, SplitError, SplitInputError, Splitter, detect_format
from .split_numpy import NpySplitter, NpzSplitter
from .split_pickle import PickleSplitter
from .split_torch import TorchSplitter

__all__ = [
    "SplitOptions",
    "SplitJob",
    "SplitReport",
    "SplitInputResult",
    "InputPlan",
    "plan_split",
    "split_files",
    "recommend_for",
    "DEFAULT_TRACES_PER_BATCH",
    "DEFAULT_PATTERN",
]

DEFAULT_TRACES_PER_BATCH = 250
DEFAULT_PATTERN = "*.pkl*"
DEFAULT_LEVEL = 6

SPLITTERS: dict[str, type[Splitter]] = {
    "pickle": PickleSplitter,
    "npy": NpySplitter,
    "npz": NpzSplitter,
    "torch": TorchSplitter,
}


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class SplitOptions:
    input: str
    output: str
    traces_per_batch: int = DEFAULT_TRACES_PER_BATCH
    compress: bool = True
    compress_level: int = DEFAULT_LEVEL
    delete_original: bool = False  # already confirmed by whoever built the options
    validate: bool = True
    pattern: str = DEFAULT_PATTERN
    workers: int | None = None
    overwrite: bool = False
    skip_existing: bool = False

    def checked(self) -> "SplitOptions":
        if isinstance(self.traces_per_batch, bool) or not isinstance(self.traces_per_batch, int) or self.traces_per_batch < 1:
            raise SplitError(f"--traces-per-batch {self.traces_per_batch!r} must be a whole number of at least 1")
        if not 0 <= self.compress_level <= 9:
            raise SplitError(f"--compress-level {self.compress_level!r} must be between 0 and 9")
        if self.workers is not None and self.workers < 1:
            raise SplitError(f"--workers {self.workers!r} must be at least 1")
        if self.delete_original and not self.validate:
            raise SplitError("--delete-original needs validation, so originals go only after their split is proven equal; drop --no-validate")
        if self.overwrite and self.skip_existing:
            raise SplitError("--overwrite and --skip-existing contradict each other; pass one of them")
        if not self.pattern or "/" in self.pattern:
            raise SplitError(f"--pattern {self.pattern!r} must be a file name pattern like '*.pkl*' (no '/')")
        return self


@dataclass(frozen=True)
class InputPlan:
    path: Path
    fmt: FormatInfo
    name: str
    out_suffix: str
    size_bytes: int
    existing: tuple[Path, ...] = ()

    def out_name(self, k: int) -> str:
        return f"{self.name}_sub{k:04d}{self.out_suffix}"


@dataclass(frozen=True)
class SplitInputResult:
    input: str
    format: str
    input_bytes: int
    items: int = 0
    outputs: tuple[str, ...] = ()
    output_bytes: int = 0
    validated: bool = False
    deleted_original: bool = False
    skipped: bool = False
    error: str | None = None
    duration_s: float = 0.0

    def describe(self) -> str:
        name = Path(self.input).name
        if self.skipped:
            return f"{name}: skipped, its outputs already exist"
        if self.error:
            return f"{name}: FAILED, {self.error}"
        first = Path(self.outputs[0]).name if self.outputs else "-"
        last = Path(self.outputs[-1]).name if self.outputs else "-"
        span = first if len(self.outputs) == 1 else f"{first} .. {last}"
        tail = ", validated" if self.validated else ", not validated"
        if self.deleted_original:
            tail += ", original deleted"
        return f"{name}: {self.items} items -> {len(self.outputs)} files ({span}), {format_size(self.output_bytes)}{tail}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["outputs"] = list(self.outputs)
        return out


@dataclass(frozen=True)
class SplitReport:
    input: str
    output: str
    traces_per_batch: int
    results: tuple[SplitInputResult, ...]
    workers: int
    duration_s: float = 0.0
    cancelled: bool = False

    @property
    def failed(self) -> tuple[SplitInputResult, ...]:
        return tuple(r for r in self.results if r.error)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled

    def summary(self) -> str:
        lines = [r.describe() for r in self.results]
        done = [r for r in self.results if not r.error and not r.skipped]
        items = sum(r.items for r in done)
        files = sum(len(r.outputs) for r in done)
        lines.append(
            f"total: {len(done)} inputs, {items} items -> {files} files in {self.output} "
            f"({format_duration(self.duration_s)}, {self.workers} workers)"
            + (f"; {len(self.failed)} inputs FAILED and were left as they were" if self.failed else "")
            + ("; cancelled" if self.cancelled else "")
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["results"] = [r.to_json() for r in self.results]
        out["ok"] = self.ok
        return out


# ---------------------------------------------------------------------------------- planning
def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _existing_outputs(out_dir: Path, name: str, suffix: str) -> tuple[Path, ...]:
    if not out_dir.is_dir():
        return ()
    rx = re.compile(re.escape(name) + r"_sub\d{4,}" + re.escape(suffix) + "$")
    return tuple(sorted(p for p in out_dir.iterdir() if rx.match(p.name)))


def plan_split(opts: SplitOptions) -> list[InputPlan]:
    """Every input with its output names; raises :class:`SplitError` before anything is written."""
    opts.checked()
    inp = Path(opts.input).expanduser()
    out = Path(opts.output).expanduser()
    if not inp.exists():
        raise SplitError(f"--input '{inp}' does not exist; give a file or a directory of batches")
    if out.exists() and not out.is_dir():
        raise SplitError(f"--output '{out}' is a file; give a directory (it is created if missing)")
    inp_real, out_real = inp.resolve(), out.resolve()
    if inp.is_dir():
        if _is_within(out_real, inp_real):
            raise SplitError(
                f"--output '{out}' is inside --input '{inp}'; choose an output directory outside the input, "
                f"so outputs are never taken for inputs"
            )
        files = sorted(p for p in inp.glob(opts.pattern) if p.is_file() and not p.name.endswith(".part"))
        if not files:
            raise SplitError(f"no files in '{inp}' match --pattern {opts.pattern!r}; check the directory or pass another --pattern")
    elif inp.is_file():
        files = [inp]
    else:
        raise SplitError(f"--input '{inp}' is neither a file nor a directory")
    plans: list[InputPlan] = []
    claimed: dict[str, Path] = {}
    for f in files:
        fmt = detect_format(f)
        name = fmt.stem(f.name)
        suffix = SPLITTERS[fmt.name].out_suffix(opts.compress)
        stem_key = f"{name}_sub*{suffix}"
        if stem_key in claimed:
            raise SplitError(
                f"inputs '{claimed[stem_key].name}' and '{f.name}' would both write {stem_key} in '{out}'; "
                f"split them into different --output directories"
            )
        claimed[stem_key] = f
        size = f.stat().st_size
        if size == 0:
            raise SplitInputError(f"'{f}' is empty (0 bytes); there is nothing to split — remove it or re-create it")
        existing = _existing_outputs(out, name, suffix)
        if existing and not (opts.overwrite or opts.skip_existing):
            raise SplitError(
                f"--output '{out}' already has {len(existing)} sub-batches of '{f.name}' ({existing[0].name}, ...); "
                f"pass --overwrite to replace them or --skip-existing to keep them"
            )
        plans.append(InputPlan(f, fmt, name, suffix, size, existing))
    return plans


# ---------------------------------------------------------------------------------- running
class _Aborted(Exception):
    """Another sub-batch of the same input failed; stop this one."""


def _clean_stale_parts(out_dir: Path, plan: InputPlan) -> None:
    rx = re.compile(re.escape(plan.name) + r"_sub\d{4,}" + re.escape(plan.out_suffix) + r"\.(\d+)\.part$")
    dead: set[int] = set()
    for p in out_dir.iterdir():
        part = rx.match(p.name)
        m = part or _PUBLISHING.match(p.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            p.unlink(missing_ok=True)
        elif _pid_alive(pid):
            if not part:
                continue  # a live split publishing another input here: none of ours
            raise SplitError(f"another split (pid {pid}) is writing sub-batches of '{plan.path.name}' in '{out_dir}'; wait for it")
        else:
            dead.add(pid)
    for pid in dead:
        undo_dead_split(out_dir, pid)


# ``.split.<pid>.publishing``: written just before a split renames its validated ``.part``
# files to their final names and removed once the input is dealt with. Found with its
# process gone (kill -9 between two renames), it says which outputs form a half-published set.
_PUBLISHING = re.compile(r"^\.split\.(\d+)\.publishing$")


def _publishing_path(out_dir: Path, pid: int) -> Path:
    return out_dir / f".split.{pid}.publishing"


def undo_dead_split(out_dir: Path, pid: int) -> None:
    """Remove what split process ``pid`` (dead) left in ``out_dir``: its ``.part`` files, and a set of
    outputs it was publishing when it died, unless it had already deleted that set's input (then the
    set is complete and validated, and the only copy)."""
    if not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        if p.name.endswith(f".{pid}.part"):
            p.unlink(missing_ok=True)
    manifest = _publishing_path(out_dir, pid)
    try:
        lines = manifest.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except FileNotFoundError:
        return
    if lines and os.path.exists(lines[0]):  # the input is still there: the half-published outputs go
        for name in lines[1:]:
            if name and "/" not in name:
                (out_dir / name).unlink(missing_ok=True)
    manifest.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _split_one(plan: InputPlan, opts: SplitOptions, ctx: JobContext, pool: ThreadPoolExecutor, workers: int,
               index: int, total_inputs: int) -> SplitInputResult:
    t0 = time.monotonic()
    out_dir = Path(opts.output).expanduser()
    created_dir = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SplitError(f"--output '{out_dir}' cannot be created ({exc.strerror}); choose a writable directory") from None
    _clean_stale_parts(out_dir, plan)
    free = shutil.disk_usage(out_dir).free
    if free < plan.size_bytes:
        ctx.warn(f"only {format_size(free)} free in '{out_dir}' for '{plan.path.name}' ({format_size(plan.size_bytes)}); "
                 f"the split may run out of space (nothing is lost if it does)")
    label = f"[{index + 1}/{total_inputs}] {plan.path.name}"
    parts: list[Path] = []
    renamed: list[Path] = []
    abort = threading.Event()
    futures: list[Any] = []
    splitter: Splitter | None = None
    try:
        ctx.progress("load", 0, plan.size_bytes, unit="bytes", bytes_done=0, bytes_total=plan.size_bytes, message=f"loading {label}")
        splitter = SPLITTERS[plan.fmt.name](plan.path, ctx)
        n, count = opts.traces_per_batch, splitter.count
        ranges = [(s, min(s + n, count)) for s in range(0, count, n)]
        finals = [out_dir / plan.out_name(k) for k in range(len(ranges))]
        parts = [f.with_name(f"{f.name}.{os.getpid()}.part") for f in finals]
        vlock = threading.Lock()
        sem = threading.BoundedSemaphore(workers)
        lock = threading.Lock()
        st = {"written": 0, "validated": 0, "bytes": 0}
        k_total = len(ranges)

        def report() -> None:
            done = st["validated"] if opts.validate else st["written"]
            ctx.progress("split", done, k_total, unit="sub-batches", bytes_done=st["bytes"],
                         message=f"{label}: {st['written']}/{k_total} written, {st['validated']}/{k_total} validated")

        def check() -> None:
            if abort.is_set():
                raise _Aborted()
            ctx.check()

        def task(k: int, s: int, e: int, payload: Any) -> int:
            try:
                splitter.write(payload, parts[k], compress=opts.compress, level=opts.compress_level, check=check)
                size = os.stat(parts[k]).st_size
                with lock:
                    st["written"] += 1
                    st["bytes"] += size
                report()
                if opts.validate:
                    with vlock:  # one sub-batch loaded back at a time: memory stays bounded
                        check()
                        splitter.validate(payload, parts[k], start=s, check=check)
                    with lock:
                        st["validated"] += 1
                    report()
                del payload
                splitter.release(s, e)
                return size
            except BaseException:
                abort.set()
                raise
            finally:
                sem.release()

        report()
        for k, (s, e) in enumerate(ranges):
            while not sem.acquire(timeout=0.2):
                check()
            try:
                check()
                payload = splitter.take(s, e)
                futures.append(pool.submit(task, k, s, e, payload))
            except BaseException:
                sem.release()
                raise
            del payload
        while True:
            done, not_done = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                abort.set()
                wait(futures)
                errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
                raise next((e for e in errors if not isinstance(e, _Aborted)), errors[0])  # type: ignore[misc]
            if not not_done:
                break
            ctx.check()
        sizes = [f.result() for f in futures]
        if sum(e - s for s, e in ranges) != count:  # pragma: no cover - arithmetic guard, as the seed checked counts
            raise SplitError(f"sub-batch counts of '{plan.path.name}' do not add up to {count}")
        ctx.check()
        durable = opts.delete_original
        if durable:
            for p in parts:
                _fsync_file(p)
        manifest = _publishing_path(out_dir, os.getpid())
        manifest.write_text("\n".join([str(plan.path.resolve()), *(f.name for f in finals)]) + "\n",
                            encoding="utf-8", errors="surrogateescape")
        for p, f in zip(parts, finals):
            os.replace(p, f)
            renamed.append(f)
        parts = []
        for old in plan.existing:
            if old not in finals:
                try:
                    old.unlink()
                except FileNotFoundError:
                    pass
        if durable:
            _fsync_dir(out_dir)
        deleted = False
        if opts.delete_original:
            os.unlink(plan.path)
            deleted = True
            _fsync_dir(plan.path.parent)
        manifest.unlink(missing_ok=True)
        return SplitInputResult(
            input=str(plan.path), format=plan.fmt.name, input_bytes=plan.size_bytes, items=count,
            outputs=tuple(str(f) for f in finals), output_bytes=sum(sizes), validated=opts.validate,
            deleted_original=deleted, duration_s=time.monotonic() - t0,
        )
    except BaseException as exc:
        abort.set()
        for f in futures:
            f.cancel()
        wait(futures)
        for p in parts:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        for f in renamed:  # a half-renamed set is worse than none; the input is still there
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        _publishing_path(out_dir, os.getpid()).unlink(missing_ok=True)
        if created_dir:
            try:
                out_dir.rmdir()  # only if still empty: leave no trace of a failed split
            except OSError:
                pass
        if isinstance(exc, _Aborted):  # the job's thread noticed a worker's failure: report that failure
            errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
            exc = next((e for e in errors if not isinstance(e, _Aborted)), None)  # type: ignore[assignment]
            if exc is None:
                raise SplitError(f"'{plan.path.name}' was not split") from None
        if isinstance(exc, OSError) and not isinstance(exc, SplitError):
            raise SplitError(f"writing sub-batches of '{plan.path.name}' to '{out_dir}' failed ({exc.strerror or exc}); "
                             f"partial outputs were removed and the input is untouched") from None
        raise exc
    finally:
        if splitter is not None:
            splitter.close()


def split_files(opts: SplitOptions, ctx: JobContext | None = None) -> SplitReport:
    """Split every input named by ``opts``; see the module docstring."""
    ctx = ctx or JobContext("split", "split")
    t0 = time.monotonic()
    plans = plan_split(opts)
    workers = opts.workers or default_workers()
    single = Path(opts.input).expanduser().is_file()
    results: list[SplitInputResult] = []
    cancelled = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cachewatch-split") as pool:
        for i, plan in enumerate(plans):
            if ctx.cancelled:
                cancelled = True
                break
            if plan.existing and opts.skip_existing:
                results.append(SplitInputResult(str(plan.path), plan.fmt.name, plan.size_bytes, skipped=True,
                                                outputs=tuple(str(p) for p in plan.existing)))
                continue
            try:
                results.append(_split_one(plan, opts, ctx, pool, workers, i, len(plans)))
            except JobCancelled:
                cancelled = True
                break
            except SplitError as exc:
                if single:
                    raise
                ctx.message(f"{plan.path.name}: {exc}", "error")
                results.append(SplitInputResult(str(plan.path), plan.fmt.name, plan.size_bytes, error=str(exc)))
    return SplitReport(
        input=opts.input, output=opts.output, traces_per_batch=opts.traces_per_batch, results=tuple(results),
        workers=workers, duration_s=time.monotonic() - t0, cancelled=cancelled,
    )


def recommend_for(input_path: str | None = None, pattern: str = DEFAULT_PATTERN, available_bytes: int | None = None) -> Recommendation:
    """``--recommend``: from available RAM, and from the item size when the input's header tells it."""
    if available_bytes is None:
        import psutil

        available_bytes = int(psutil.virtual_memory().available)
    item = None
    if input_path:
        p = Path(input_path).expanduser()
        files = sorted(p.glob(pattern)) if p.is_dir() else [p]
        for f in files:
            try:
                fmt = detect_format(f)
            except SplitInputError:
                continue
            if fmt.name in ("npy", "npz"):
                try:
                    item = SPLITTERS[fmt.name](f, JobContext("recommend", "split")).item_bytes()
                except SplitError:
                    item = None
                break
    return recommend(available_bytes, item)


@dataclass
class SplitJob(Job):
    options: SplitOptions
    kind = "split"
    isolation = "process"  # a batch bigger than memory gets the split killed, never the engine

    def crash_cleanup(self) -> Callable[[int], None]:
        out = Path(self.options.output).expanduser()
        existed = out.exists()

        def cleanup(pid: int) -> None:
            undo_dead_split(out, pid)
            if not existed:
                try:
                    out.rmdir()  # only if empty: a killed split leaves no trace
                except OSError:
                    pass

        return cleanup

    def describe(self) -> str:
        return f"split {self.options.input} -> {self.options.output} ({self.options.traces_per_batch} per batch)"

    def run(self, ctx: JobContext) -> SplitReport:
        return split_files(self.options, ctx)
