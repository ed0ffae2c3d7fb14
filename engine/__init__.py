"""cachewatch's engine: the managed cache, the training supervisor and the maintenance jobs.

This package never imports Textual; a training script, a daemon and the dashboard
all use it the same way.
"""

from ._version import __version__
from .cache import Cache, CacheMiss, CacheStats, EntryInfo, EvictionReport
from .config import Config, load_config
from .errors import (
    CacheBusy,
    CacheDiskFull,
    CacheError,
    CacheFull,
    CacheKeyError,
    CacheRootError,
    CachewatchError,
    ConfigError,
)
from .events import Event, EventLog
from .sizes import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "__version__",
    "Cache",
    "CacheMiss",
    "CacheStats",
    "EntryInfo",
    "EvictionReport",
    "Config",
    "load_config",
    "CachewatchError",
    "ConfigError",
    "CacheError",
    "CacheFull",
    "CacheBusy",
    "CacheDiskFull",
    "CacheKeyError",
    "CacheRootError",
    "Event",
    "EventLog",
    "parse_size",
    "format_size",
    "parse_duration",
    "format_duration",
    "WatchedDirectory",
    "WatchStats",
    "WatchError",
]


_LAZY = {"WatchedDirectory", "WatchStats", "WatchError"}


def __getattr__(name: str):  # watched directories pull in numpy: only on first use
    if name in _LAZY:
        from . import watch

        return getattr(watch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
