"""Which files under a watched root count (and may be evicted): include and exclude globs.

A pattern without ``/`` matches the file name at any depth (``*.jpg``); a pattern
with ``/`` matches the path relative to the root (``images/**/*.jpg``), where
``**`` stands for any number of whole directories and ``*`` never crosses a
``/``. A trailing ``/`` means "everything under this directory" (``tmp/``).
Patterns are compiled once into two regular expressions (names, paths) because
the scanner asks for every one of hundreds of thousands of files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..globs import glob_to_regex

__all__ = ["PathFilter", "glob_to_regex"]


def _compile(patterns: Iterable[str]) -> tuple[str | None, str | None]:
    names, paths = [], []
    for pat in patterns:
        rx, whole = glob_to_regex(pat)
        (paths if whole else names).append(rx)
    name_rx = "(?:" + "|".join(names) + ")" if names else None
    path_rx = "(?:" + "|".join(paths) + ")" if paths else None
    return name_rx, path_rx


@dataclass(frozen=True)
class PathFilter:
    """Include/exclude globs. An empty include list counts every regular file."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        inc = _compile(self.include)
        exc = _compile(self.exclude)
        object.__setattr__(self, "_regexes", (inc, exc))
        object.__setattr__(
            self,
            "_compiled",
            tuple(tuple(re.compile(r, re.DOTALL) if r else None for r in pair) for pair in (inc, exc)),
        )

    @property
    def is_trivial(self) -> bool:
        return not self.include and not self.exclude

    def regexes(self) -> tuple[tuple[str | None, str | None], tuple[str | None, str | None]]:
        """((include name, include path), (exclude name, exclude path)) regex sources, for scan workers."""
        return self._regexes  # type: ignore[attr-defined]

    def counts(self, rel_path: str) -> bool:
        """Whether the file at ``rel_path`` (relative to the root, ``/``-separated) counts."""
        (inc_name, inc_path), (exc_name, exc_path) = self._compiled  # type: ignore[attr-defined]
        name = rel_path.rsplit("/", 1)[-1]
        if self.include:
            if not ((inc_name and inc_name.fullmatch(name)) or (inc_path and inc_path.fullmatch(rel_path))):
                return False
        if exc_name and exc_name.fullmatch(name):
            return False
        if exc_path and exc_path.fullmatch(rel_path):
            return False
        return True
