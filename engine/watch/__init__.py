"""Watched directories: caches written by other code, kept under their limit from outside.

``WatchedDirectory(root, max_size, ...)`` with ``start()``, ``stop()``, ``stats()``
(a frozen :class:`WatchStats`), ``evict()``, ``scan()``, ``eviction_log()`` and an
``events`` log outside the root. See ``docs/watch.md``.

Names load their module on first use: the index needs NumPy, which reading the
config (``filters``) or the CLI parser should not pay for.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_LAZY = {
    "WatchedDirectory": ".watcher",
    "WatchStats": ".stats",
    "WatchAlert": ".growth",
    "GrowthEstimate": ".growth",
    "WatchError": ".errors",
    "ScanReport": ".scanner",
    "PathFilter": ".filters",
    "AccessTimeSource": ".accesstime",
    "detect_access_source": ".accesstime",
    "OpenWriters": ".openfiles",
    "find_open_writers": ".openfiles",
    "process_tree": ".openfiles",
    "FileIndex": ".tree",
    "IndexedFile": ".tree",
    "default_state_dir": ".state",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cachewatch.engine.watch' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


if TYPE_CHECKING:
    from .accesstime import AccessTimeSource, detect_access_source
    from .errors import WatchError
    from .filters import PathFilter
    from .growth import GrowthEstimate, WatchAlert
    from .openfiles import OpenWriters, find_open_writers, process_tree
    from .scanner import ScanReport
    from .state import default_state_dir
    from .stats import WatchStats
    from .tree import FileIndex, IndexedFile
    from .watcher import WatchedDirectory

__all__ = sorted(_LAZY)
