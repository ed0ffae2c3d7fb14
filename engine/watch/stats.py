"""The snapshot a watched directory hands to the dashboard, the daemon and ``--json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .growth import WatchAlert

__all__ = ["WatchStats"]


@dataclass(frozen=True)
class WatchStats:
    """One consistent reading of a watched directory.

    The first fields mean what they mean in :class:`~cachewatch.engine.CacheStats`, so
    the dashboard shows both kinds alike. ``size_bytes`` is the apparent size of the
    counted regular files (what ``du -sb`` adds up for them); ``disk_bytes`` the
    blocks they use is not tracked per file.
    """

    root: str
    size_bytes: int
    entries: int
    max_bytes: int
    target_bytes: int
    evicted_files: int
    evicted_bytes: int
    # watch-only
    kind: str
    running: bool
    events_ok: bool
    dry_run: bool
    min_age_s: float
    would_evict_files: int
    would_evict_bytes: int
    skipped_young_files: int
    skipped_open_files: int
    growth_bytes_per_min: float | None
    write_bytes_per_min: float | None
    time_to_max_s: float | None
    time_to_disk_full_s: float | None
    disk_free_bytes: int | None
    disk_total_bytes: int | None
    access_source: str
    access_source_reason: str
    scans: int
    last_scan_time: float | None
    last_scan_duration_s: float | None
    last_scan_correction_bytes: int
    index_bytes: int
    state_dir: str
    events_path: str
    alerts: tuple[WatchAlert, ...]
    time: float
    # Directories under the root the last scan could not read (absolute paths, at most 100):
    # their files are not counted, so size_bytes is too low by what they hold.
    unreadable_paths: tuple[str, ...] = ()

    # Same names as CacheStats where a dashboard may look for them.
    @property
    def data_bytes(self) -> int:
        return self.size_bytes

    @property
    def reserved_bytes(self) -> int:
        return 0

    @property
    def used_bytes(self) -> int:
        return self.size_bytes

    @property
    def hit_rate(self) -> float | None:
        return None

    @property
    def over_max(self) -> bool:
        return self.size_bytes > self.max_bytes

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["alerts"] = [a.to_json() for a in self.alerts]
        out["unreadable_paths"] = list(self.unreadable_paths)
        out["used_bytes"] = self.used_bytes
        out["data_bytes"] = self.data_bytes
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "WatchStats":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["alerts"] = tuple(WatchAlert.from_json(a) for a in d.get("alerts", ()))
        values["unreadable_paths"] = tuple(d.get("unreadable_paths", ()))
        return cls(**values)
