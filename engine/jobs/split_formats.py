"""What every split format shares: the errors, format detection, and the splitter interface.

A :class:`Splitter` is one opened input. The split job calls, in this order:

* ``count`` (items along the first axis), known once the input is open;
* ``take(start, stop)`` in increasing order, on the job's thread: what a sub-batch is
  made of (a list slice, a memory-map range, rows read from a compressed stream);
* ``write(payload, part, ...)`` on a worker thread: the sub-batch into ``part``;
* ``validate(payload, path, ...)``: the written file, loaded back, against the original,
  item by item (one validation at a time, so memory stays bounded);
* ``release(start, stop)``: the original items are no longer needed.

Formats register themselves in :data:`FORMATS` by file suffix.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import CachewatchError
from .base import CancelToken, JobContext

__all__ = [
    "SplitError",
    "SplitInputError",
    "SplitValidationError",
    "Splitter",
    "FormatInfo",
    "FORMATS",
    "detect_format",
    "CountingRaw",
    "Check",
    "shown_name",
]

Check = Callable[[], None]  # raises JobCancelled (or another error) when the work should stop


class SplitError(CachewatchError):
    """A split that cannot be done as asked; nothing was changed."""


class SplitInputError(SplitError):
    """An input that cannot be split (corrupt, truncated, wrong content); it is left as it was.

    ``reason`` is the middle of the message (what is wrong), without the file name and advice.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class SplitValidationError(SplitError):
    """A written sub-batch does not load back equal to the original; its outputs were removed."""


@dataclass(frozen=True)
class FormatInfo:
    name: str  # "pickle" | "npy" | "npz" | "torch"
    suffixes: tuple[str, ...]  # input suffixes, longest first

    def stem(self, filename: str) -> str:
        low = filename.lower()
        for s in self.suffixes:
            if low.endswith(s):
                return filename[: len(filename) - len(s)]
        return filename


FORMATS: tuple[FormatInfo, ...] = (
    FormatInfo("pickle", (".pkl.gz", ".pickle.gz", ".pkl", ".pickle")),
    FormatInfo("npy", (".npy",)),
    FormatInfo("npz", (".npz",)),
    FormatInfo("torch", (".pt", ".pth")),
)
SUPPORTED = ".pkl, .pkl.gz, .npy, .npz, .pt"


def shown_name(path: Path) -> str:
    """A ``.part`` file's final name, for messages."""
    return re.sub(r"\.\d+\.part$", "", path.name)


def detect_format(path: Path) -> FormatInfo:
    low = path.name.lower()
    for f in FORMATS:
        if any(low.endswith(s) for s in f.suffixes):
            return f
    raise SplitInputError(f"'{path}' is not a format split knows ({SUPPORTED}); rename it or narrow --pattern")


class CountingRaw(io.RawIOBase):
    """A raw reader that counts bytes (progress while loading) and stops on cancel."""

    def __init__(self, fh: Any, on_bytes: Callable[[int], None] | None = None, token: CancelToken | None = None) -> None:
        self.fh = fh
        self.on_bytes = on_bytes
        self.token = token
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.fh.readinto(b)
        if n:
            self.count += n
            if self.on_bytes is not None:
                self.on_bytes(self.count)
        if self.token is not None:
            self.token.raise_if_cancelled()
        return n or 0


class Splitter(ABC):
    """One opened input; see the module docstring for the call order."""

    fmt: str = ""
    count: int = 0

    def __init__(self, path: Path, ctx: JobContext) -> None:
        self.path = path
        self.ctx = ctx

    @staticmethod
    @abstractmethod
    def out_suffix(compress: bool) -> str: ...

    @abstractmethod
    def take(self, start: int, stop: int) -> Any: ...

    @abstractmethod
    def write(self, payload: Any, part: Path, *, compress: bool, level: int, check: Check) -> None: ...

    @abstractmethod
    def validate(self, payload: Any, path: Path, *, start: int, check: Check) -> None: ...

    def release(self, start: int, stop: int) -> None:
        """Drop the original items ``[start, stop)`` once their output is validated."""

    def close(self) -> None:
        pass

    def item_bytes(self) -> int | None:
        """Bytes per item when known without loading (for --recommend)."""
        return None
