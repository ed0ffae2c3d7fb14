"""Byte sizes and durations written by people: ``"100GB"``, ``"64MiB"``, ``"90s"``, ``"2h"``.

Decimal units (KB, MB, GB, TB, PB) are powers of 1000 and binary units (KiB, MiB,
GiB, TiB, PiB) powers of 1024, as in the SI/IEC standards and in ``du --si`` /
``du -h``. A bare number is bytes (or seconds). Errors name the value and the fix.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_size", "format_size", "parse_duration", "format_duration", "SizeError", "MAX_SIZE_BYTES", "short_repr"]

# The largest byte count cachewatch can store: SQLite integers (the index) and off_t are
# signed 64-bit. "1e300PB" would otherwise become an infinite float and an OverflowError.
MAX_SIZE_BYTES = 2**63 - 1


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'" if text[0] in "'\"" else text[: limit - 3] + "..."


class SizeError(ValueError):
    """A size or duration string that cannot be read; the message names it and the fix."""


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "p": 1000**5,
    "pb": 1000**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}
_UNIT_HELP = "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | float | str, *, what: str = "size") -> int:
    """Return ``value`` in bytes. Accepts ints, floats and strings like ``"1.5 GiB"``.

    Negative sizes, unknown units and non-numbers raise :class:`SizeError`.
    """
    if isinstance(value, bool):
        raise SizeError(f"{what} = {short_repr(value)} is not a size; write a number of bytes or a string like '100GB'")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
        if isinstance(value, int):
            if value < 0:
                raise SizeError(f"{what} = {short_repr(value)} is negative; sizes must be 0 or more")
            if value > MAX_SIZE_BYTES:
                raise SizeError(f"{what} = {short_repr(value)} is too large; sizes go up to 9.2 EB (2**63 - 1 bytes)")
            return value
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise SizeError(f"{what} = {short_repr(value)} is not a size; write a number with a unit, like '100GB' or '64MiB'")
        number, unit = float(m.group(1)), m.group(2)
        if unit.lower() not in _SIZE_UNITS:
            raise SizeError(f"{what} = {short_repr(value)} has unknown unit {unit!r}; use {_UNIT_HELP}")
    else:
        raise SizeError(f"{what} = {short_repr(value)} is not a size; write a number of bytes or a string like '100GB'")
    if math.isnan(number) or math.isinf(number):
        raise SizeError(f"{what} = {short_repr(value)} is not a finite size")
    if number < 0:
        raise SizeError(f"{what} = {short_repr(value)} is negative; sizes must be 0 or more")
    total = number * _SIZE_UNITS[unit.lower()]
    if not math.isfinite(total) or total > MAX_SIZE_BYTES:
        raise SizeError(f"{what} = {short_repr(value)} is too large; sizes go up to 9.2 EB (2**63 - 1 bytes)")
    return int(round(total))


def format_size(n_bytes: int | float, *, binary: bool = True, precision: int = 1) -> str:
    """Human form of a byte count: ``format_size(1536) == '1.5 KiB'``.

    cachewatch shows disk and cache sizes in decimal units (``binary=False``), as people
    write limits in the config (``max_size = "100GB"``), and memory (RAM, GPU) in binary
    units, as ``free -h`` and ``nvidia-smi`` do.
    """
    n = float(n_bytes)
    sign = "-" if n < 0 else ""
    n = abs(n)
    step = 1024.0 if binary else 1000.0
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] if binary else ["B", "KB", "MB", "GB", "TB", "PB"]
    for unit in units:
        if n < step or unit == units[-1]:
            if unit == "B":
                return f"{sign}{int(n)} B"
            return f"{sign}{n:.{precision}f} {unit}"
        n /= step
    raise AssertionError("unreachable")


_DURATION_UNITS = {
    "": 1.0,
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)")


def parse_duration(value: int | float | str, *, what: str = "duration") -> float:
    """Return ``value`` in seconds. Accepts numbers and strings like ``"90s"``, ``"1h30m"``, ``"7d"``."""
    if isinstance(value, bool):
        raise SizeError(f"{what} = {short_repr(value)} is not a duration; write seconds or a string like '30s', '2h'")
    if isinstance(value, (int, float)):
        if value < 0 or math.isnan(value) or math.isinf(value):
            raise SizeError(f"{what} = {short_repr(value)} must be a finite number of seconds, 0 or more")
        return float(value)
    if not isinstance(value, str):
        raise SizeError(f"{what} = {short_repr(value)} is not a duration; write seconds or a string like '30s', '2h'")
    text = value.strip()
    if text.startswith("-"):
        raise SizeError(f"{what} = {short_repr(value)} is negative; durations must be 0 or more")
    pos, total, parts = 0, 0.0, 0
    for m in _DURATION_PART.finditer(text):
        if text[pos : m.start()].strip():
            break
        unit = m.group(2).lower()
        if unit not in _DURATION_UNITS:
            raise SizeError(f"{what} = {short_repr(value)} has unknown unit {m.group(2)!r}; use ms, s, m, h, d or w")
        total += float(m.group(1)) * _DURATION_UNITS[unit]
        pos, parts = m.end(), parts + 1
    if parts == 0 or text[pos:].strip():
        raise SizeError(f"{what} = {short_repr(value)} is not a duration; write seconds or a string like '30s', '1h30m', '7d'")
    if not math.isfinite(total):  # a 400-digit number of weeks is an infinite float
        raise SizeError(f"{what} = {short_repr(value)} must be a finite duration")
    return total


def format_duration(seconds: float | None) -> str:
    """Compact human duration: ``3h 14m``, ``2m 05s``, ``41s``; ``--`` for unknown."""
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return "--"
    s = int(round(max(0.0, seconds)))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"
