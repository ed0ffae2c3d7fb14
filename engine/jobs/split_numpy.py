"""Splitting NumPy files along the first axis: ``.npy`` and ``.npz``, never loaded whole.

``.npy``: the input is memory-mapped; each worker maps it again for its own rows and
unmaps when done, so pages it touched are not kept.

``.npz`` (a zip of ``.npy`` members split in lockstep, like ``x`` and ``y``): a member
*stored* without compression is memory-mapped at its offset inside the zip; a
*deflated* member is read as a stream, rows in order, so only the sub-batches in flight
are ever in memory. Outputs are written member by member with ``write_array``, which
copies in 16 MiB pieces.

Object arrays are refused: they are pickles inside, cannot be mapped, and loading them
runs code (``allow_pickle`` stays off).
"""

from __future__ import annotations

import os
import struct
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import JobContext
from .equality import arrays_equal
from .split_formats import Check, SplitInputError, SplitValidationError, Splitter, shown_name

__all__ = ["NpySplitter", "NpzSplitter"]

_NPY_MAGIC = b"\x93NUMPY"
_CHUNK = 16 << 20


def _open_npy_mmap(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise SplitInputError(f"'{path}' cannot be read ({exc.strerror})") from None
    if not head:
        raise SplitInputError(f"'{path}' is empty (0 bytes); there is nothing to split — remove it or re-create it")
    if head != _NPY_MAGIC:
        raise SplitInputError(f"'{path}' is not a NumPy .npy file (bad magic bytes); the file is left as it was")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        text = str(exc)
        if "Python objects" in text or "pickled" in text or "allow_pickle" in text:
            raise SplitInputError(f"'{path}' holds Python objects (dtype=object); save it with a numeric dtype or as a pickle") from None
        if "greater than file size" in text or "cannot" in text.lower():
            raise SplitInputError(f"'{path}' is truncated or corrupt ({text}); the file is left as it was") from None
        raise SplitInputError(f"'{path}' cannot be read as .npy ({text}); the file is left as it was") from None
    except (OSError, EOFError) as exc:
        raise SplitInputError(f"'{path}' is truncated or corrupt ({exc}); the file is left as it was") from None
    return arr


def _rows_step(arr_row_bytes: int) -> int:
    return max(1, _CHUNK // max(1, arr_row_bytes))


class NpySplitter(Splitter):
    fmt = "npy"

    def __init__(self, path: Path, ctx: JobContext) -> None:
        super().__init__(path, ctx)
        arr = _open_npy_mmap(path)
        if arr.ndim == 0:
            raise SplitInputError(f"'{path}' holds a single value (0-d array); there is no first axis to split along")
        if arr.shape[0] == 0:
            raise SplitInputError(f"'{path}' has 0 rows; there is nothing to split")
        self.count = int(arr.shape[0])
        self.dtype = arr.dtype
        self.shape = arr.shape
        self._row_bytes = int(arr[:1].nbytes)
        del arr

    @staticmethod
    def out_suffix(compress: bool) -> str:
        return ".npy"

    def item_bytes(self) -> int | None:
        return self._row_bytes

    def take(self, start: int, stop: int) -> Any:
        return (start, stop)

    def write(self, payload: Any, part: Path, *, compress: bool, level: int, check: Check) -> None:
        start, stop = payload
        arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        try:
            view = arr[start:stop]
            with open(part, "xb") as fh:
                step = _rows_step(self._row_bytes)
                header = {"descr": np.lib.format.dtype_to_descr(view.dtype), "fortran_order": False, "shape": view.shape}
                np.lib.format.write_array_header_2_0(fh, header) if _needs_v2(header) else np.lib.format.write_array_header_1_0(fh, header)
                for i in range(0, view.shape[0], step):
                    fh.write(np.ascontiguousarray(view[i : i + step]).data)
                    check()
        finally:
            del arr

    def validate(self, payload: Any, path: Path, *, start: int, check: Check) -> None:
        s, e = payload
        orig = np.load(self.path, mmap_mode="r", allow_pickle=False)
        try:
            try:
                out = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise SplitValidationError(f"sub-batch '{shown_name(path)}' does not load back ({exc})") from None
            if out.dtype != orig.dtype or out.shape != (e - s,) + orig.shape[1:]:
                raise SplitValidationError(
                    f"sub-batch '{shown_name(path)}' loads back as {out.dtype}{out.shape}, expected {orig.dtype}{(e - s,) + orig.shape[1:]}"
                )
            if not arrays_equal(orig[s:e], out):
                raise SplitValidationError(f"rows {s}..{e - 1} of '{self.path.name}' differ in '{shown_name(path)}'")
            del out
        finally:
            del orig


def _needs_v2(header: dict[str, Any]) -> bool:
    # Version 1.0 headers hold at most 65535 bytes; huge structured dtypes need 2.0.
    return len(repr(header)) > 60000


# ---------------------------------------------------------------------------------------- npz
@dataclass
class _Member:
    name: str  # without .npy
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    data_offset: int | None  # for stored members: where the array's bytes start in the zip file


def _read_npy_header(fp: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    return np.lib.format._read_array_header(fp, version)  # (3, 0): utf-8 field names


def _local_header_size(zpath: Path, info: zipfile.ZipInfo) -> int:
    with open(zpath, "rb") as fh:
        fh.seek(info.header_offset)
        fixed = fh.read(30)
    if len(fixed) != 30 or fixed[:4] != b"PK\x03\x04":
        raise SplitInputError(f"'{zpath}' is corrupt (bad local header for {info.filename}); the file is left as it was")
    name_len, extra_len = struct.unpack("<HH", fixed[26:30])
    return 30 + name_len + extra_len


class _StreamRows:
    """Rows of a deflated member, read in order (a zip member cannot seek cheaply)."""

    def __init__(self, zf: zipfile.ZipFile, m: _Member) -> None:
        self.m = m
        self.fp = zf.open(m.info)
        _read_npy_header(self.fp)
        self.pos = 0
        self.row_bytes = int(np.prod(m.shape[1:], dtype=np.int64)) * m.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        if start != self.pos:
            raise AssertionError(f"rows must be read in order ({start} != {self.pos})")
        want = (stop - start) * self.row_bytes
        buf = bytearray(want)
        view = memoryview(buf)
        got = 0
        while got < want:
            n = self.fp.readinto(view[got:]) if hasattr(self.fp, "readinto") else 0
            if not n:
                chunk = self.fp.read(want - got)
                if not chunk:
                    raise SplitInputError(f"member {self.m.name!r} ends early; the .npz is truncated")
                view[got : got + len(chunk)] = chunk
                n = len(chunk)
            got += n
        self.pos = stop
        return np.frombuffer(buf, dtype=self.m.dtype).reshape((stop - start,) + self.m.shape[1:])

    def close(self) -> None:
        self.fp.close()


def _open_members(path: Path) -> tuple[zipfile.ZipFile, list[_Member]]:
    try:
        if os.stat(path).st_size == 0:
            raise SplitInputError(f"'{path}' is empty (0 bytes); there is nothing to split — remove it or re-create it")
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise SplitInputError(f"'{path}' is not a valid .npz (zip) file ({exc}); it may be truncated — the file is left as it was") from None
    except OSError as exc:
        raise SplitInputError(f"'{path}' cannot be read ({exc.strerror})") from None
    members: list[_Member] = []
    try:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise SplitInputError(f"'{path}' has member {info.filename!r}, which is not an array; not a NumPy .npz")
            try:
                with zf.open(info) as fp:
                    shape, fortran, dtype = _read_npy_header(fp)
            except (ValueError, zipfile.BadZipFile, EOFError, OSError) as exc:
                raise SplitInputError(f"'{path}' member {info.filename!r} is corrupt ({exc}); the file is left as it was") from None
            if dtype.hasobject:
                raise SplitInputError(f"'{path}' member {info.filename!r} holds Python objects (dtype=object); save it with a numeric dtype")
            offset = None
            declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if info.compress_type == zipfile.ZIP_STORED:
                with zf.open(info) as fp:
                    _read_npy_header(fp)
                    header_len = fp.tell()
                if header_len + declared != info.file_size:
                    raise SplitInputError(
                        f"'{path}' member {info.filename!r} declares {declared} bytes of data but holds "
                        f"{info.file_size - header_len}; the file is corrupt and was left as it was"
                    )
                offset = info.header_offset + _local_header_size(path, info) + header_len
            elif declared > info.compress_size * 1100 + (1 << 20):  # deflate cannot expand more than ~1032:1
                raise SplitInputError(
                    f"'{path}' member {info.filename!r} declares {declared} bytes, more than its "
                    f"{info.compress_size} compressed bytes can hold; the file is corrupt or hostile and was left as it was"
                )
            elif fortran and len(shape) > 1:
                raise SplitInputError(
                    f"'{path}' member {info.filename!r} is Fortran-ordered and compressed, so its rows cannot be "
                    f"streamed; save it C-ordered (np.ascontiguousarray) or uncompressed (np.savez)"
                )
            members.append(_Member(info.filename[:-4], info, dtype, tuple(shape), bool(fortran), offset))
    except BaseException:
        zf.close()
        raise
    if not members:
        zf.close()
        raise SplitInputError(f"'{path}' holds no arrays; there is nothing to split")
    return zf, members


class NpzSplitter(Splitter):
    fmt = "npz"

    def __init__(self, path: Path, ctx: JobContext) -> None:
        super().__init__(path, ctx)
        self.zf, self.members = _open_members(path)
        for m in self.members:
            if len(m.shape) == 0:
                raise SplitInputError(f"'{path}' member {m.name!r} is a single value (0-d); there is no first axis to split along")
        lengths = {m.name: m.shape[0] for m in self.members}
        if len(set(lengths.values())) != 1:
            shown = ", ".join(f"{k}: {v}" for k, v in lengths.items())
            raise SplitInputError(f"'{path}' arrays have different first-axis lengths ({shown}); they cannot be split in lockstep")
        self.count = next(iter(lengths.values()))
        if self.count == 0:
            raise SplitInputError(f"'{path}' has 0 rows; there is nothing to split")
        self._streams: dict[str, _StreamRows] = {}
        self._lock = threading.Lock()

    @staticmethod
    def out_suffix(compress: bool) -> str:
        return ".npz"

    def item_bytes(self) -> int | None:
        return sum(int(np.prod(m.shape[1:], dtype=np.int64)) * m.dtype.itemsize for m in self.members)

    def _mapped(self, m: _Member) -> np.ndarray:
        order = "F" if m.fortran else "C"
        return np.memmap(self.path, dtype=m.dtype, mode="r", offset=m.data_offset or 0, shape=m.shape, order=order)

    def take(self, start: int, stop: int) -> Any:
        out: dict[str, Any] = {}
        for m in self.members:
            if m.data_offset is not None:
                out[m.name] = ("map", start, stop)
            else:
                stream = self._streams.get(m.name)
                if stream is None:
                    stream = self._streams[m.name] = _StreamRows(self.zf, m)
                try:
                    out[m.name] = stream.read(start, stop)
                except (zipfile.BadZipFile, EOFError, OSError) as exc:
                    raise SplitInputError(f"'{self.path}' member {m.name!r} is corrupt ({exc}); the file is left as it was") from None
        return out

    def _rows(self, m: _Member, value: Any) -> np.ndarray:
        if isinstance(value, tuple):
            _, s, e = value
            return self._mapped(m)[s:e]
        return value

    def write(self, payload: Any, part: Path, *, compress: bool, level: int, check: Check) -> None:
        method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with open(part, "xb") as fh, zipfile.ZipFile(fh, "w", compression=method, compresslevel=level if compress else None, allowZip64=True) as zf:
            for m in self.members:
                arr = self._rows(m, payload[m.name])
                with zf.open(m.name + ".npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, arr, allow_pickle=False)
                del arr
                check()

    def validate(self, payload: Any, path: Path, *, start: int, check: Check) -> None:
        try:
            zf, members = _open_members(path)
        except SplitInputError as exc:
            raise SplitValidationError(f"sub-batch '{shown_name(path)}' does not load back: {exc}") from None
        try:
            got = {m.name: m for m in members}
            if set(got) != {m.name for m in self.members}:
                raise SplitValidationError(f"sub-batch '{shown_name(path)}' has arrays {sorted(got)}, expected {sorted(m.name for m in self.members)}")
            for m in self.members:
                orig = self._rows(m, payload[m.name])
                om = got[m.name]
                if om.dtype != m.dtype or om.shape != orig.shape:
                    raise SplitValidationError(f"array {m.name!r} of '{shown_name(path)}' is {om.dtype}{om.shape}, expected {m.dtype}{orig.shape}")
                if om.data_offset is not None:
                    same = arrays_equal(orig, np.memmap(path, dtype=om.dtype, mode="r", offset=om.data_offset, shape=om.shape,
                                                        order="F" if om.fortran else "C"))
                else:
                    stream = _StreamRows(zf, om)
                    try:
                        step = max(1, _CHUNK // max(1, orig[:1].nbytes))
                        same = True
                        for i in range(0, om.shape[0], step):
                            j = min(om.shape[0], i + step)
                            if stream.read(i, j).tobytes() != orig[i:j].tobytes():
                                same = False
                                break
                            check()
                    finally:
                        stream.close()
                if not same:
                    raise SplitValidationError(f"array {m.name!r} rows {start}.. of '{self.path.name}' differ in '{shown_name(path)}'")
        finally:
            zf.close()

    def close(self) -> None:
        for s in self._streams.values():
            s.close()
        self.zf.close()
