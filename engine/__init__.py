"""cachewatch's engine: the managed cache, the training supervisor and the maintenance jobs.

This package never imports Textual; a training script, a daemon and the dashboard
all use it the same way.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

# Names load their module on first use, so ``from cachewatch.engine import report`` in a
# training script costs microseconds, not the SQLite/xxhash stack of the cache.
_LAZY = {
    "Cache": ".cache",
    "CacheMiss": ".cache",
    "CacheStats": ".cache",
    "EntryInfo": ".cache",
    "EvictionReport": ".cache",
    "Config": ".config",
    "load_config": ".config",
    "CachewatchError": ".errors",
    "ConfigError": ".errors",
    "CacheError": ".errors",
    "CacheFull": ".errors",
    "CacheBusy": ".errors",
    "CacheDiskFull": ".errors",
    "CacheKeyError": ".errors",
    "CacheRootError": ".errors",
    "Event": ".events",
    "EventLog": ".events",
    "parse_size": ".sizes",
    "format_size": ".sizes",
    "parse_duration": ".sizes",
    "format_duration": ".sizes",
    "report": ".training.report",
    "Monitor": ".monitor",
    "MonitorSnapshot": ".monitor",
    "MonitorError": ".monitor",
    "WatchedDirectory": ".watch",
    "WatchStats": ".watch",
    "WatchError": ".watch",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
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
    from .monitor import Monitor, MonitorError, MonitorSnapshot
    from .sizes import format_duration, format_size, parse_duration, parse_size
    from .training import report
    from .watch import WatchedDirectory, WatchError, WatchStats

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
    "report",
    "Monitor",
    "MonitorSnapshot",
    "MonitorError",
    "WatchedDirectory",
    "WatchStats",
    "WatchError",
]
