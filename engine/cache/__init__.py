"""The managed cache: one size bound shared by every process on a machine."""

from .cache import Cache, CacheMiss
from .types import CacheStats, EntryInfo, EvictionReport

__all__ = ["Cache", "CacheMiss", "CacheStats", "EntryInfo", "EvictionReport"]
