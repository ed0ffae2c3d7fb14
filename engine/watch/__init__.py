"""Watched directories: caches written by other code, kept under their limit from outside.

``WatchedDirectory(root, max_size, ...)`` with ``start()``, ``stop()``, ``stats()``
(a frozen :class:`WatchStats`), ``evict()``, ``scan()``, ``eviction_log()`` and an
``events`` log outside the root. See ``docs/watch.md``.

Names load their module on first use: the index needs NumPy, which reading the
config (``filters``) or the CLI parser should not pay for.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

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
