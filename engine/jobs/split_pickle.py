"""Splitting pickles (``.pkl``, ``.pkl.gz``) of a list of items, with bounded memory.

**Pickles run code when loaded: split only files from a trusted source.**

Memory, for an input whose items take U bytes once loaded:

* the list is loaded once (U); gzip is detected from the content, not the name;
* each sub-batch is pickled *straight into* its compressor and file: a
  ``pickle.Pickler`` writes to an :class:`AdaptiveGzipWriter` writing to the ``.part`` file. Protocol 5
  hands NumPy arrays' memory to the compressor without copying it, so there is never a
  second copy of the items, nor the sub-batch's pickled bytes, in memory;
* ``--workers`` threads compress sub-batches in parallel: zlib releases the GIL while it
  deflates, so threads use several cores without copying the items to other processes
  (which would cost a pickled copy per sub-batch);
* validation loads each sub-batch back and compares it item by item with the original.
  Just before, every original item of that sub-batch whose pickle is stable (pickled,
  unpickled and pickled again, it gives the same bytes: true of lists, dicts, strings,
  numbers, contiguous arrays...) is reduced to the 128-bit xxh3 digest of its pickle
  and dropped; the reloaded item must pickle to the same digest. Items whose pickle is
  not stable (a set, an array view) are kept and compared structurally. So an item and
  its reloaded copy are never both held, and memory *falls* as the split goes on: the
  peak is about U plus the unstable items plus one item in flight per worker.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from pathlib import Path
from typing import Any, Callable

from .base import CancelToken, JobCancelled, JobContext
from .equality import items_equal, pickle_digest
from .split_formats import Check, CountingRaw, SplitInputError, SplitValidationError, Splitter, shown_name

__all__ = ["PickleSplitter", "load_pickle", "gzip_damage", "GZIP_MAGIC"]

GZIP_MAGIC = b"\x1f\x8b"
_READ_BUFFER = 1 << 20


def load_pickle(
    path: Path, *, on_bytes: Callable[[int], None] | None = None, ctx: JobContext | None = None, to_the_end: bool = False
) -> Any:
    """Load a pickle (gzip-compressed or not), with clear errors for every way it can be broken.

    ``to_the_end`` also reads what follows the pickle: nothing may, and for gzip that read is
    what checks the stream's CRC and length (``pickle.load`` stops at its STOP opcode, before
    the trailer): without it a flipped bit in the deflate data can load as a changed item.
    When a gzip input fails to load in any way (a flipped length can read as "out of memory"
    or "truncated"), the whole stream is checked and a damaged one is reported as such.
    """
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
            obj = pickle.load(stream)
            if to_the_end and stream.read(1):
                raise _bad(path, "has data after the end of its pickle")
            return obj
        except (JobCancelled, SplitInputError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if compressed:
                damage = gzip_damage(path, ctx.token if ctx is not None else None)
                if damage is not None:
                    raise _bad(path, damage, "restore it from a good copy (`gzip -t` reports it too)") from None
            raise _load_error(path, exc, compressed, size) from None


def gzip_damage(path: Path, token: CancelToken | None = None) -> str | None:
    """What is wrong with the gzip file ``path`` (bad CRC, bad length, bad deflate data, cut short), or None.

    Reads every member to its end, as ``gzip -t`` does, keeping nothing in memory.
    """
    try:
        with gzip.open(path, "rb") as g:
            while g.read(_READ_BUFFER):
                if token is not None:
                    token.raise_if_cancelled()
    except EOFError:
        return f"is truncated: the gzip stream ends early ({format(os.stat(path).st_size, ',')} bytes on disk)"
    except gzip.BadGzipFile as exc:
        return f"is not a valid gzip file ({exc})"
    except zlib.error as exc:
        return f"has corrupt compressed data ({exc})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _load_error(path: Path, exc: BaseException, compressed: bool, size: int) -> SplitInputError:
    """The one-line message for a pickle that does not load (its gzip stream, if any, being sound)."""
    if isinstance(exc, EOFError):
        if compressed and "end-of-stream" in str(exc):
            return _bad(path, f"is truncated: the gzip stream ends early ({format(size, ',')} bytes on disk)",
                        "copy or re-create it completely")
        return _bad(path, "is truncated: the pickle ends early", "re-create it")
    if isinstance(exc, gzip.BadGzipFile):
        return _bad(path, f"is not a valid gzip file ({exc})")
    if isinstance(exc, zlib.error):
        return _bad(path, f"has corrupt compressed data ({exc})")
    if isinstance(exc, pickle.UnpicklingError):
        return _bad(path, f"is not a valid pickle ({exc})")
    if isinstance(exc, (ModuleNotFoundError, ImportError, AttributeError)):
        return SplitInputError(
            f"'{path}' needs code that is not importable here to load ({type(exc).__name__}: {exc}); "
            f"run split in the environment that wrote it"
        )
    if isinstance(exc, MemoryError):
        return SplitInputError(
            f"not enough memory to load '{path}'; free memory or split on a machine with more (see --recommend)"
        )
    return _bad(path, f"cannot be loaded ({type(exc).__name__}: {exc})")


def _bad(path: Path, reason: str, advice: str = "") -> SplitInputError:
    tail = f"the file is left as it was — {advice}" if advice else "the file is left as it was"
    return SplitInputError(f"'{path}' {reason}; {tail}", reason)


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def _return_freed_memory() -> None:
    """Give freed items back to the OS now.

    Sub-batches are loaded back on worker threads, each with its own glibc malloc arena;
    memory freed in one arena (the original items, a validated sub-batch) is not reused by
    another, so without this the process keeps holding what it already freed.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _round_trip_digest(item: Any) -> str | None:
    try:
        return pickle_digest(pickle.loads(pickle.dumps(item, protocol=5)))
    except Exception:
        return None


class AdaptiveGzipWriter:
    """A gzip stream whose zlib strategy is chosen from its first bytes.

    LZ matching is what makes deflate slow, and on data it cannot find matches in
    (float activations, already-compressed bytes) it buys nothing: zlib's run-length
    strategy gives the same size or smaller, several times faster. The first
    ``PROBE_BYTES`` are compressed both ways; if run-length coding comes within 0.5 % of
    the requested level, the whole stream uses it. Either way the output is an ordinary
    gzip file (``gzip.open`` reads it), and the same input always gives the same bytes.
    """

    PROBE_BYTES = 1 << 20

    def __init__(self, sink: Any, level: int) -> None:
        self.sink = sink
        self.level = level
        self.strategy: int | None = None
        self._probe = bytearray()
        self._c: Any = None

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = view.nbytes
        if self._c is None:
            need = self.PROBE_BYTES - len(self._probe)
            self._probe += view[:need]
            if len(self._probe) < self.PROBE_BYTES:
                return n
            self._start()
            view = view[need:]
        if view.nbytes:
            self.sink.write(self._c.compress(view))
        return n

    def _start(self) -> None:
        sample = memoryview(self._probe)
        sizes = {}
        for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_RLE):
            c = zlib.compressobj(self.level, zlib.DEFLATED, -15, 8, strategy)
            # in small pieces: only the sizes are wanted, not a second copy of the sample
            sizes[strategy] = sum(len(c.compress(sample[i : i + 65536])) for i in range(0, len(sample), 65536))
            sizes[strategy] += len(c.flush())
        self.strategy = zlib.Z_RLE if sizes[zlib.Z_RLE] <= sizes[zlib.Z_DEFAULT_STRATEGY] * 1.005 else zlib.Z_DEFAULT_STRATEGY
        self._c = zlib.compressobj(self.level, zlib.DEFLATED, 31, 8, self.strategy)  # wbits 31: gzip framing
        self.sink.write(self._c.compress(sample))
        sample.release()
        self._probe = bytearray()

    def close(self) -> None:
        if self._c is None:
            self._start()
        self.sink.write(self._c.flush())


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

        # to_the_end: a gzip input is read through its trailer, so its CRC and length are checked
        # before anything is written (and long before --delete-original may remove it).
        obj = load_pickle(path, on_bytes=on_bytes, ctx=ctx, to_the_end=True)
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
        # Only the range: a list of the items would keep them alive past their validation.
        return (start, stop)

    def write(self, payload: Any, part: Path, *, compress: bool, level: int, check: Check) -> None:
        s, e = payload
        sub = self.items[s:e]
        if self.container is not list:
            sub = self.container(sub)
        with open(part, "xb") as raw:
            sink = _CheckedWriter(raw, check)
            if compress and level > 0:
                gz = AdaptiveGzipWriter(sink, level)
                pickle.Pickler(gz, protocol=5).dump(sub)
                gz.close()
            else:
                pickle.Pickler(sink, protocol=5).dump(sub)

    def validate(self, payload: Any, path: Path, *, start: int, check: Check) -> None:
        """Load the sub-batch back and compare every item with the original, in bounded memory.

        Before loading it back, each original item is reduced to the xxh3-128 digest of its
        pickle when that pickle is stable (an in-memory round trip pickles to the same
        bytes), and the item is dropped; the others are kept whole. Then the reloaded items
        must match the digests (same bytes as the original's pickle) or, for kept items,
        compare equal structurally. So the originals and their reloaded copies are never
        both in memory, and the peak stays near the size of the input.
        """
        s, e = payload
        digests: dict[int, str] = {}
        kept: dict[int, Any] = {}
        for i in range(s, e):
            item = self.items[i]
            d = pickle_digest(item)
            if d is not None and d == _round_trip_digest(item):
                digests[i] = d
                self.items[i] = None
            else:
                kept[i] = item
            del item
            if (i - s) % 16 == 0:
                check()
        _return_freed_memory()
        try:
            loaded = load_pickle(path, to_the_end=True)
        except SplitInputError as exc:
            raise SplitValidationError(f"sub-batch '{shown_name(path)}' does not load back: it {exc.reason}") from None
        if type(loaded) is not self.container or len(loaded) != e - s:
            got = len(loaded) if hasattr(loaded, "__len__") else "?"
            raise SplitValidationError(
                f"sub-batch '{shown_name(path)}' loads back as {type(loaded).__name__} of {got} items, "
                f"expected {self.container.__name__} of {e - s}"
            )
        if not isinstance(loaded, list):
            loaded = list(loaded)
        for j in range(e - s):
            i = s + j
            obj = loaded[j]
            loaded[j] = None
            same = pickle_digest(obj) == digests[i] if i in digests else items_equal(kept.pop(i), obj)
            del obj
            if not same:
                raise SplitValidationError(
                    f"item {i} of '{self.path.name}' differs after writing and reloading '{shown_name(path)}'"
                )
            if j % 16 == 0:
                check()

    def release(self, start: int, stop: int) -> None:
        self.items[start:stop] = [None] * (stop - start)
        _return_freed_memory()

    def close(self) -> None:
        self.items = []
