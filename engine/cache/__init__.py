"""The managed cache: one size bound shared by every process on a machine."""

from .cache import Cache, CacheMiss, index_kwargs
from .types import CacheStats, EntryInfo, EvictionReport

__all__ = ["Cache", "CacheMiss", "index_kwargs", "CacheStats", "EntryInfo", "EvictionReport"]
