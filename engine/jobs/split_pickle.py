"""Splitting pickles (``.pkl``, ``.pkl.gz``) of a list of items, with bounded memory.

**Pickles run code when loaded: split only files from a trusted source.**

Memory, for an input whose items take U bytes once loaded:

* the list is loaded once (U); gzip is detected from the content, not the name;
* each sub-batch is pickled *straight into* its compressor and file: a
  ``pickle.Pickler`` writes to a ``GzipFile`` writing to the ``.part`` file. Protocol 5
  hands NumPy arrays' memory to the compressor without copying it, so there is never a
  second copy of the items, nor the sub-batch's pickled bytes, in memory;
* ``--workers`` threads compress sub-batches in parallel: zlib releases the GIL while it
  deflates, so threads use several cores without copying the items to other processes
  (which would cost a pickled copy per sub-batch);
* validation loads one sub-batch back at a time (at most n/N x U more), compares it
  item by item with the original, and then drops both that sub-batch and the original
  items it replaced; the peak is therefore about U x (1 + n/N), and the memory in use
  falls as the split goes on.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from pathlib import Path
from typing import Any, Callable

from .base import JobCancelled, JobContext
from .equality import items_equal
from .split_formats import Check, CountingRaw, SplitInputError, SplitValidationError, Splitter, shown_name

__all__ = ["PickleSplitter", "load_pickle", "GZIP_MAGIC"]

GZIP_MAGIC = b"\x1f\x8b"
_READ_BUFFER = 1 << 20


def load_pickle(path: Path, *, on_bytes: Callable[[int], None] | None = None, ctx: JobContext | None = None) -> Any:
    """Load a pickle (gzip-compressed or not), with clear errors for every way it can be broken."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise SplitInputError(f"'{path}' cannot be read ({exc.strerror})") from None
    if size == 0:
        raise SplitInputError(f"'{path}' is empty (0 bytes); there is nothing to split — remove it or re-create it")
    try:
        fh = open(path, "rb", buffering=0)
    except OSError as exc:
        raise SplitInputError(f"'{path}' cannot be read ({exc.strerror})") from None
    with fh:
        compressed = os.pread(fh.fileno(), 2, 0) == GZIP_MAGIC
        raw = CountingRaw(fh, on_bytes, ctx.token if ctx is not None else None)
        stream: Any = io.BufferedReader(raw, _READ_BUFFER)
        if compressed:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        elif path.name.lower().endswith(".gz"):
            raise SplitInputError(f"'{path}' is named .gz but is not gzip-compressed (no gzip header); rename it to .pkl if it is a plain pickle")
        try:
            return pickle.load(stream)
        except JobCancelled:
            raise
        except EOFError as exc:
            if compressed and "end-of-stream" in str(exc):
                raise _bad(path, f"is truncated: the gzip stream ends early ({format(size, ',')} bytes on disk)",
                           "copy or re-create it completely") from None
            raise _bad(path, "is truncated: the pickle ends early", "re-create it") from None
        except gzip.BadGzipFile as exc:
            raise _bad(path, f"is not a valid gzip file ({exc})") from None
        except zlib.error as exc:
            raise _bad(path, f"has corrupt compressed data ({exc})") from None
        except pickle.UnpicklingError as exc:
            raise _bad(path, f"is not a valid pickle ({exc})") from None
        except (ModuleNotFoundError, ImportError, AttributeError) as exc:
            raise SplitInputError(
                f"'{path}' needs code that is not importable here to load ({type(exc).__name__}: {exc}); "
                f"run split in the environment that wrote it"
            ) from None
        except MemoryError:
            raise SplitInputError(
                f"not enough memory to load '{path}'; free memory or split on a machine with more (see --recommend)"
            ) from None
        except Exception as exc:
            raise _bad(path, f"cannot be loaded ({type(exc).__name__}: {exc})") from None


def _bad(path: Path, reason: str, advice: str = "") -> SplitInputError:
    tail = f"the file is left as it was — {advice}" if advice else "the file is left as it was"
    return SplitInputError(f"'{path}' {reason}; {tail}", reason)


class _CheckedWriter:
    """File writes that stop promptly when the job is cancelled or another sub-batch failed."""

    __slots__ = ("fh", "check", "since")

    def __init__(self, fh: Any, check: Check) -> None:
        self.fh = fh
        self.check = check
        self.since = 0

    def write(self, b: Any) -> int:
        n = self.fh.write(b)
        self.since += n
        if self.since >= 8 << 20:
            self.since = 0
            self.check()
        return n

    def flush(self) -> None:
        self.fh.flush()


class PickleSplitter(Splitter):
    fmt = "pickle"

    def __init__(self, path: Path, ctx: JobContext) -> None:
        super().__init__(path, ctx)
        total = os.stat(path).st_size
        name = path.name

        def on_bytes(n: int) -> None:
            ctx.progress("load", n, total, unit="bytes", bytes_done=n, bytes_total=total, message=f"loading {name}")

        obj = load_pickle(path, on_bytes=on_bytes, ctx=ctx)
        if not isinstance(obj, (list, tuple)):
            kind = type(obj).__name__
            del obj
            raise SplitInputError(
                f"'{path}' holds a {kind}, not a list; split takes pickles of a list (or tuple) of items"
            )
        if len(obj) == 0:
            raise SplitInputError(f"'{path}' holds an empty {type(obj).__name__}; there is nothing to split")
        self.container = type(obj)
        # A list we own, so validated items can be dropped from memory as the split goes on.
        self.items: list[Any] = obj if isinstance(obj, list) and type(obj) is list else list(obj)
        del obj
        self.count = len(self.items)

    @staticmethod
    def out_suffix(compress: bool) -> str:
        return ".pkl.gz" if compress else ".pkl"

    def take(self, start: int, stop: int) -> Any:
        sub = self.items[start:stop]
        return sub if self.container is list else self.container(sub)

    def write(self, payload: Any, part: Path, *, compress: bool, level: int, header_name: str, check: Check) -> None:
        with open(part, "xb") as raw:
            sink = _CheckedWriter(raw, check)
            if compress:
                # mtime=0: the same input gives byte-identical outputs
                with gzip.GzipFile(filename=header_name, mode="wb", compresslevel=level, fileobj=sink, mtime=0) as gz:
                    pickle.Pickler(gz, protocol=5).dump(payload)
            else:
                pickle.Pickler(sink, protocol=5).dump(payload)

    def validate(self, payload: Any, path: Path, *, start: int, check: Check) -> None:
        try:
            loaded = load_pickle(path)
        except SplitInputError as exc:
            raise SplitValidationError(f"sub-batch '{shown_name(path)}' does not load back: it {exc.reason}") from None
        if type(loaded) is not type(payload) or len(loaded) != len(payload):
            raise SplitValidationError(
                f"sub-batch '{shown_name(path)}' loads back as {type(loaded).__name__} of {len(loaded)} items, "
                f"expected {type(payload).__name__} of {len(payload)}"
            )
        for i, (a, b) in enumerate(zip(payload, loaded)):
            if not items_equal(a, b):
                raise SplitValidationError(
                    f"item {start + i} of '{self.path.name}' differs after writing and reloading '{shown_name(path)}'"
                )
            if i % 16 == 0:
                check()

    def release(self, start: int, stop: int) -> None:
        self.items[start:stop] = [None] * (stop - start)

    def close(self) -> None:
        self.items = []
