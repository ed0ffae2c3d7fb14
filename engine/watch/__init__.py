"""Watched directories: caches written by other code, kept under their limit from outside.

``WatchedDirectory(root, max_size, ...)`` with ``start()``, ``stop()``, ``stats()``
(a frozen :class:`WatchStats`), ``evict()``, ``scan()``, ``eviction_log()`` and an
``events`` log outside the root. See ``docs/watch.md``.
"""

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

__all__ = [
    "WatchedDirectory",
    "WatchStats",
    "WatchAlert",
    "WatchError",
    "GrowthEstimate",
    "ScanReport",
    "PathFilter",
    "AccessTimeSource",
    "detect_access_source",
    "OpenWriters",
    "find_open_writers",
    "process_tree",
    "FileIndex",
    "IndexedFile",
    "default_state_dir",
]
