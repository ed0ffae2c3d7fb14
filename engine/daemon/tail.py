"""Following files that other processes append to: the training log and the progress file.

Polling ``fstat`` a few times a second costs microseconds and needs no inotify; it also
works on network filesystems where inotify does not.

The training log is rotated by the output pump (:mod:`..training.output`): offsets in it
are *logical*, counted from the first byte ever written, and go on growing across
rotations. ``training.log.base`` says where the current file starts; older bytes are in
``training.log.1``, ``.2``... while they are kept. A log that was never rotated has no base
file, and its offsets are plain file offsets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..training.output import read_base, rotated_path, utf8_safe_end
from .protocol import LOG_CHUNK_MAX_BYTES, LogChunk

__all__ = ["FileTail", "read_chunk", "read_logical", "utf8_safe_end"]

_MAX_ROTATED = 1000  # more kept files than anyone configures; the walk stops at the first gap


def read_logical(path: str | os.PathLike[str], offset: int, max_bytes: int) -> tuple[int, bytes, int]:
    """``(start, data, end)``: bytes of the (rotated) log from logical ``offset`` (negative:
    that many before the end), at most ``max_bytes`` and never past one file's end; ``end``
    is the logical end of the log now. ``start`` is later than ``offset`` when the bytes
    asked for were rotated away. A rotation while reading is noticed and the read retried."""
    path = Path(path)
    for attempt in range(20):
        base = read_base(path)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            if base and attempt < 19:
                time.sleep(0.005)  # between "log -> log.1" and the new log's creation
                continue
            fh = None
        try:
            st = os.fstat(fh.fileno()) if fh is not None else None
            size, current_ino = (st.st_size, st.st_ino) if st is not None else (0, None)
            if read_base(path) != base:
                continue  # rotated while we opened it
            end = base + size
            start = max(0, end + offset) if offset < 0 else min(offset, end)
            if start >= base:
                if fh is None or start == end:
                    return start, b"", end
                fh.seek(start - base)
                return start, fh.read(min(max_bytes, end - start)), end
        finally:
            if fh is not None:
                fh.close()
        # Before the current file: walk back through the rotated ones. A rotation shifts them
        # one by one (log.k -> log.k+1, from the oldest), then renames the log and writes the
        # base last, so a walk can meet a gap or a file twice: what it saw is checked after
        # the read (same inodes, same base, same current file), and a gap is waited out.
        seg_end = base
        found: tuple[Path, int, int] | None = None
        seen: list[tuple[Path, int]] = []
        gap = False
        for n in range(1, _MAX_ROTATED):
            try:
                st = os.stat(rotated_path(path, n))
            except FileNotFoundError:
                gap = rotated_path(path, n + 1).exists()  # mid-shift, not the oldest kept
                break
            seen.append((rotated_path(path, n), st.st_ino))
            seg_start = seg_end - st.st_size
            found = (rotated_path(path, n), seg_start, seg_end)
            if start >= seg_start:
                break
            seg_end = seg_start
        if gap:
            time.sleep(0.001)
            continue
        if found is None:
            offset = base  # nothing older is kept: go on from the current file's start
            continue
        fpath, seg_start, seg_end = found
        start = max(start, seg_start)
        try:
            with open(fpath, "rb") as old:
                old.seek(start - seg_start)
                data = old.read(min(max_bytes, seg_end - start))
        except FileNotFoundError:
            continue
        if read_base(path) != base or not _unchanged(path, current_ino, seen):
            continue
        return start, data, end
    return max(0, offset), b"", max(0, offset)


def _unchanged(path: Path, current_ino: int | None, seen: list[tuple[Path, int]]) -> bool:
    """Every file a walk saw is still where it saw it (no rotation ran meanwhile)."""
    try:
        if current_ino is not None and os.stat(path).st_ino != current_ino:
            return False
        return all(os.stat(p).st_ino == ino for p, ino in seen)
    except FileNotFoundError:
        return False


def read_chunk(path: str | os.PathLike[str], offset: int, max_bytes: int = 64 * 1024) -> LogChunk:
    """Bytes from logical ``offset`` (negative: that many from the end) as text, never
    splitting a character. Offsets go on across rotations (see the module doc)."""
    max_bytes = max(1, min(int(max_bytes), LOG_CHUNK_MAX_BYTES))
    start, data, size = read_logical(path, offset, max_bytes)
    while data and len(data) < max_bytes and start + len(data) < size:
        # The bytes asked for span a rotation: go on into the next file.
        more_start, more, size = read_logical(path, start + len(data), max_bytes - len(data))
        if more_start != start + len(data) or not more:
            break
        data += more
    end = utf8_safe_end(data)
    if end == 0 and data:
        end = len(data)  # a lone broken character: pass it on (replaced) rather than stall
    return LogChunk(
        offset=start,
        next_offset=start + end,
        size=size,
        data=data[:end].decode("utf-8", errors="replace"),
        path=str(path),
    )


class FileTail:
    """New bytes appended to one file since the last call, following it across rotations.

    ``offset`` is logical (see the module doc). The current file stays open between calls,
    so a poll with nothing new is one ``fstat`` and one ``stat``. When the name points to a
    new file (the log was rotated), the old file, still open, is read to its end first,
    then any file rotated away in between, then the new one: no byte is lost or repeated.
    A file that shrank (truncated by hand) is read again from its start.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self._fd: int | None = None
        self._ino: int | None = None
        self._base = 0  # logical offset of the open file's first byte

    @classmethod
    def at_end(cls, path: str | os.PathLike[str]) -> "FileTail":
        return cls(path, cls(path).size())

    def size(self) -> int:
        """The logical end of the file now."""
        return read_logical(self.path, 0, 0)[2]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._ino = None

    def _open_current(self) -> bool:
        """Open the file the name points to now, with its base. False if there is none."""
        for _ in range(20):
            base = read_base(self.path)
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not base:
                    return False
                time.sleep(0.005)  # mid-rotation
                continue
            if read_base(self.path) != base:
                os.close(fd)
                continue
            self.close()
            self._fd, self._ino, self._base = fd, os.fstat(fd).st_ino, base
            return True
        return False

    def _renamed(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    def read_new(self, max_bytes: int = 1024 * 1024) -> tuple[int, bytes]:
        """``(offset_of_data, data)``; empty when nothing new. At most ``max_bytes`` per call."""
        if self._fd is None and not self._open_current():
            return self.offset, b""
        assert self._fd is not None
        for _ in range(8):
            end = self._base + os.fstat(self._fd).st_size
            if self.offset < self._base or self.offset > end:
                if self.offset > end and not self._renamed():
                    self.offset = self._base  # truncated by hand: read it again from its start
                    continue
                if self.offset < self._base:
                    # Bytes in files rotated away since we opened this one: read them by name.
                    start, data, _ = read_logical(self.path, self.offset, max_bytes)
                    if data:
                        self.offset = start + len(data)
                        return start, data
                    if start <= self.offset:
                        return self.offset, b""  # a rotation kept moving the files: at the next poll
                    self.offset = max(self.offset, start)
                    if self.offset < self._base:
                        self.offset = self._base
                    continue
            if self.offset < end:
                data = os.pread(self._fd, min(max_bytes, end - self.offset), self.offset - self._base)
                start = self.offset
                self.offset += len(data)
                return start, data
            # Nothing new in the open file: was it rotated? Its end is final then (the pump
            # renames it before writing to the new one), and we have read it all.
            if not self._renamed():
                return self.offset, b""
            end = self._base + os.fstat(self._fd).st_size
            if end > self.offset:
                continue  # written just before the rename: read it from the old file first
            old_end = end
            if not self._open_current():
                self.close()
                return self.offset, b""
            if self._base < old_end:
                self.offset = self._base  # a log started over (removed by hand): from its start
        return self.offset, b""

    def read_lines(self, max_bytes: int = 1024 * 1024) -> list[bytes]:
        """Complete new lines only; a line still being written is left for the next call."""
        start, data = self.read_new(max_bytes)
        end = data.rfind(b"\n")
        if end < 0:
            self.offset = start
            if len(data) >= max_bytes:  # one line longer than the window: skip it whole
                self.offset = start + len(data)
            return []
        self.offset = start + end + 1
        return data[: end + 1].splitlines()
