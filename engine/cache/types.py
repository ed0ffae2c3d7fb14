"""Immutable values the cache hands out: statistics, eviction reports, entry listings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..events import Event

__all__ = ["CacheStats", "EvictionReport", "EntryInfo"]


@dataclass(frozen=True)
class CacheStats:
    """A consistent reading of a cache's counters.

    ``size_bytes`` counts each entry file rounded up to the filesystem block (as
    ``du`` does), because that is what the disk holds; ``data_bytes`` is the sum of
    the file lengths. The bound is ``size_bytes + reserved_bytes <= max_bytes``.
    """

    root: str
    size_bytes: int
    data_bytes: int
    entries: int
    max_bytes: int
    target_bytes: int
    reserved_bytes: int
    writers: int
    replaced_pinned_bytes: int
    hits: int
    misses: int
    evicted_files: int
    evicted_bytes: int
    expired_files: int
    ttl_s: float | None
    block_bytes: int
    # A Redis-indexed cache (one bound across machines): bytes of write leases that expired
    # before their writer committed, counted until a reconciler has removed its files; and the
    # index's URL (without password). 0 and None for a SQLite-indexed cache.
    quarantined_bytes: int = 0
    index: str | None = None
    index_id: str | None = None  # the shared cache's identity (its uuid): the same on every node
    nodes: tuple[str, ...] = ()  # the nodes that wrote to it in the last hour

    @property
    def used_bytes(self) -> int:
        """What the bound applies to: entry bytes on disk plus writes in flight (and quarantined leases)."""
        return self.size_bytes + self.reserved_bytes + self.quarantined_bytes

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["used_bytes"] = self.used_bytes
        out["hit_rate"] = self.hit_rate
        return out


@dataclass(frozen=True)
class EvictionReport:
    """What one eviction pass removed (or, with ``dry_run``, would remove)."""

    reason: str
    files: int
    bytes: int
    size_before: int
    size_after: int
    keys: tuple[str, ...] = ()
    pinned_skipped: int = 0
    dry_run: bool = False
    time: float = 0.0
    duration_s: float = 0.0

    def describe(self, root: str = "") -> str:
        """The human line, in the form seed 000 grepped for."""
        from ..sizes import format_size

        verb = "Would evict" if self.dry_run else "Evicted"
        where = f" {root}" if root else ""
        noun = "file" if self.files == 1 else "files"
        return (
            f"{verb} {self.files} {noun} ({format_size(self.bytes, binary=False)}) from cache{where} "
            f"(reason: {self.reason}, {format_size(self.size_before, binary=False)} -> "
            f"{format_size(self.size_after, binary=False)})"
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["keys"] = list(self.keys)
        return out

    @classmethod
    def from_event(cls, e: Event) -> EvictionReport:
        """Back from an ``eviction`` event of an events file (a managed cache's or a watched root's)."""
        return cls(
            reason=str(e.get("reason", "")),
            files=int(e.get("files", 0)),
            bytes=int(e.get("bytes", 0)),
            size_before=int(e.get("size_before", 0)),
            size_after=int(e.get("size_after", 0)),
            keys=tuple(e.get("keys", ())),
            pinned_skipped=int(e.get("pinned_skipped", 0)),
            time=e.time,
            duration_s=float(e.get("duration_s", 0.0)),
        )


@dataclass(frozen=True)
class EntryInfo:
    key: str
    path: Path
    size_bytes: int
    checksum: str | None
    created: float
    accessed: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out
