"""The glob syntax of ``include`` / ``exclude`` (see ``watch/filters.py``), compiled to regular expressions.

It lives beside ``sizes`` and ``errors`` rather than in ``watch/`` because reading the config
checks every glob, and the config must not import the packages it configures (an
import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import re

from .errors import ConfigError

__all__ = ["glob_to_regex"]


def _segment_regex(seg: str, pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(seg)
    while i < n:
        c = seg[i]
        if c == "*":
            while i < n and seg[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and seg[j] in "!^":
                j += 1
            if j < n and seg[j] == "]":
                j += 1
            while j < n and seg[j] != "]":
                j += 1
            if j >= n:
                raise ConfigError(f"glob {pattern!r} has an unclosed '['; close the class or escape it as '[[]'")
            body = seg[i + 1 : j]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_to_regex(pattern: str) -> tuple[str, bool]:
    """The regex for one glob, and whether it applies to the whole relative path (else to the name)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"glob {pattern!r} is empty; write a pattern like '*.jpg' or 'images/**'")
    p = pattern.strip()
    if "/" not in p:
        return _segment_regex(p, pattern), False
    p = p.lstrip("/")
    if p.endswith("/"):
        p += "**"
    segs = p.split("/")
    parts: list[str] = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        elif seg == "":
            continue  # "a//b" is "a/b"
        else:
            parts.append(_segment_regex(seg, pattern) + ("" if last else "/"))
    return "".join(parts), True
