"""Following files that other processes append to: the training log and the progress file.

Polling ``fstat`` a few times a second costs microseconds and needs no inotify; it also
works on network filesystems where inotify does not.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .protocol import LOG_CHUNK_MAX_BYTES, LogChunk

__all__ = ["FileTail", "read_chunk", "utf8_safe_end"]


def utf8_safe_end(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    n = len(data)
    i = n - 1
    # Walk back over continuation bytes (10xxxxxx) to the lead byte of the last character.
    while i >= 0 and n - i <= 4 and (data[i] & 0xC0) == 0x80:
        i -= 1
    if i < 0 or n - i > 4:
        return n  # not UTF-8 anyway; let the decoder replace it
    lead = data[i]
    need = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
    return n if n - i >= need else i


def read_chunk(path: str | os.PathLike[str], offset: int, max_bytes: int = 64 * 1024) -> LogChunk:
    """Bytes from ``offset`` (negative: that many from the end) as text, never splitting a character."""
    max_bytes = max(1, min(int(max_bytes), LOG_CHUNK_MAX_BYTES))
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size + offset) if offset < 0 else min(offset, size)
            fh.seek(start)
            data = fh.read(min(max_bytes, size - start))
    except FileNotFoundError:
        return LogChunk(offset=0, next_offset=0, size=0, data="", path=str(path))
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
    """New bytes appended to one file since the last call. A file that shrank starts over at 0.

    The file stays open between calls, so a poll with nothing new is one ``fstat``; whether
    the path now names another file (removed, replaced) is checked about once a second.
    """

    _RECHECK_S = 1.0

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self._fd: int | None = None
        self._ino: int | None = None
        self._checked = 0.0

    @classmethod
    def at_end(cls, path: str | os.PathLike[str]) -> "FileTail":
        try:
            return cls(path, os.stat(path).st_size)
        except FileNotFoundError:
            return cls(path, 0)

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int | None:
        now = time.monotonic()
        if self._fd is not None and now - self._checked < self._RECHECK_S:
            return self._fd
        self._checked = now
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            self.close()
            return None
        if self._fd is not None and ino == self._ino:
            return self._fd
        self.close()
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if self._ino is not None and ino != self._ino:
            self.offset = 0  # another file under the same name: read it from its start
        self._ino = os.fstat(self._fd).st_ino
        return self._fd

    def read_new(self, max_bytes: int = 1024 * 1024) -> tuple[int, bytes]:
        """``(offset_of_data, data)``; empty when nothing new. At most ``max_bytes`` per call."""
        fd = self._open()
        if fd is None:
            return self.offset, b""
        size = os.fstat(fd).st_size
        if size < self.offset:
            self.offset = 0  # truncated
        if size == self.offset:
            return self.offset, b""
        data = os.pread(fd, min(max_bytes, size - self.offset), self.offset)
        start = self.offset
        self.offset += len(data)
        return start, data

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
