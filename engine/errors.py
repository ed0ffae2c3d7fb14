"""Every error cachewatch raises on purpose derives from :class:`CachewatchError`.

Messages are one line that names the bad value and says what to do; the CLI
prints them as ``cachewatch: <message>`` with no traceback.
"""

from __future__ import annotations

__all__ = [
    "CachewatchError",
    "ConfigError",
    "CacheError",
    "CacheFull",
    "CacheDiskFull",
    "CacheKeyError",
    "CacheRootError",
    "CacheBusy",
    "CacheIndexUnavailable",
]


class CachewatchError(Exception):
    """Base of the errors cachewatch raises on purpose (exit code 2 from the CLI unless said otherwise)."""

    exit_code = 2


class ConfigError(CachewatchError):
    """A configuration value, file or environment override that cannot be used."""


class CacheError(CachewatchError):
    """A managed cache operation that cannot be done."""


class CacheFull(CacheError):
    """The value can never fit: it is larger than ``max_size`` minus what is pinned."""


class CacheBusy(CacheError):
    """No room could be made in time: other writers' reservations and pins hold the space."""


class CacheIndexUnavailable(CacheError):
    """A Redis-indexed cache cannot reach its Redis: puts are refused (the bound cannot be
    checked); reads of entries already on disk still work. The message names the URL."""


class CacheDiskFull(CacheError):
    """The filesystem ran out of space (ENOSPC) during a write; nothing partial was left behind."""


class CacheKeyError(CacheError, ValueError):
    """A key that cannot name an entry (empty, not a string, NUL bytes)."""


class CacheRootError(CacheError):
    """The cache root cannot be used: it is a file, unwritable, or a foreign non-empty directory."""
