"""The manifest of a pushed cache: what a pull must fetch and what each object must hash to.

A remote holds content-addressed objects (``objects/<xx>/<xxh3>-<size>``, written first)
and numbered manifests (``manifests/<seq>.json``, written last, create-only). A manifest
names every entry (key, size, xxh3 of the bytes), the source's fingerprint when the cache
was built from a ``[source]``, and the cachewatch version that pushed it. Creating the
manifest is the commit point of a push: before it exists nothing of the push is visible
to a pull; after it, every object it names is already there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import ForeignObject

__all__ = ["FORMAT", "Manifest", "ManifestEntry", "SourceFingerprint", "object_name", "parse_object_name", "manifest_name"]

FORMAT = "cachewatch-manifest/1"
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")
_OBJECT_RE = re.compile(r"^objects/[0-9a-f]{2}/([0-9a-f]{16})-([0-9]+)$")
_MANIFEST_RE = re.compile(r"^manifests/([0-9]{12})\.json$")


def object_name(xxh3: str, size_bytes: int) -> str:
    """Where the bytes hashing to ``xxh3`` live: two entries with equal content share one object."""
    return f"objects/{xxh3[:2]}/{xxh3}-{size_bytes}"


def parse_object_name(name: str) -> tuple[str, int] | None:
    m = _OBJECT_RE.match(name)
    return None if m is None else (m.group(1), int(m.group(2)))


def manifest_name(seq: int) -> str:
    return f"manifests/{seq:012d}.json"


def parse_manifest_name(name: str) -> int | None:
    m = _MANIFEST_RE.match(name)
    return None if m is None else int(m.group(1))


@dataclass(frozen=True)
class ManifestEntry:
    key: str
    size_bytes: int
    xxh3: str

    @property
    def object(self) -> str:
        return object_name(self.xxh3, self.size_bytes)


@dataclass(frozen=True)
class SourceFingerprint:
    """Which source data the cache was built from (``[source]``), so a pull can tell a stale cache."""

    describe: str
    items: int
    fingerprint: str  # xxh3-128 over the sorted (key, relpath, size) of the items and the key template

    def to_json(self) -> dict[str, Any]:
        return {"describe": self.describe, "items": self.items, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]
    cachewatch_version: str
    source: SourceFingerprint | None = None
    created: float = 0.0
    root: str = ""  # where the pushed cache lived, for the humans reading the manifest

    @property
    def data_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries)

    def charge_bytes(self, block_bytes: int) -> int:
        """What the entries occupy in a cache whose files round up to ``block_bytes`` (the bound counts this)."""
        return sum(-(-e.size_bytes // block_bytes) * block_bytes for e in self.entries)

    def same_content(self, other: "Manifest | None") -> bool:
        """Equal entries and source: pushing again would commit nothing new."""
        return other is not None and self.entries == other.entries and self.source == other.source

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "cachewatch_version": self.cachewatch_version,
            "created": self.created,
            "root": self.root,
            "source": None if self.source is None else self.source.to_json(),
            "entries": [[e.key, e.size_bytes, e.xxh3] for e in self.entries],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "Manifest":
        """Parse and check a manifest; anything that is not one of ours is a :class:`ForeignObject`."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ForeignObject(f"{where} is not a cachewatch manifest (not JSON); push the cache again with `cachewatch cache push`") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            fmt = doc.get("format") if isinstance(doc, dict) else None
            raise ForeignObject(
                f"{where} is not a cachewatch manifest (format {fmt!r}, expected {FORMAT!r}); "
                f"check the URL or push the cache again with `cachewatch cache push`"
            )
        try:
            entries = tuple(_entries(doc["entries"]))
            src = doc.get("source")
            source = None if src is None else SourceFingerprint(str(src["describe"]), int(src["items"]), str(src["fingerprint"]))
            return cls(entries, str(doc["cachewatch_version"]), source, float(doc.get("created", 0.0)), str(doc.get("root", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ForeignObject(f"{where} is a damaged cachewatch manifest ({exc}); push the cache again") from None


def _entries(raw: Iterable[Any]) -> Iterable[ManifestEntry]:
    seen: set[str] = set()
    for item in raw:
        key, size, h = item
        if not isinstance(key, str) or not isinstance(size, int) or size < 0 or not isinstance(h, str) or not _HASH_RE.match(h):
            raise ValueError(f"bad entry {item!r}")
        if key in seen:
            raise ValueError(f"key {key!r} listed twice")
        seen.add(key)
        yield ManifestEntry(key, size, h)
