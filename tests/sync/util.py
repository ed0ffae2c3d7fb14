"""Helpers for the sync tests: build a cache with known content, compare two caches."""

from __future__ import annotations

import os
from pathlib import Path

from cachewatch.engine.cache import Cache
from cachewatch.engine.errors import CacheError


def make_cache(root: Path, files: int = 40, size: int = 3000, max_size: str = "200MB", seed: int = 0) -> dict[str, bytes]:
    """A cache of ``files`` entries of random bytes; returns key -> content."""
    import random

    rnd = random.Random(seed)
    content: dict[str, bytes] = {}
    with Cache(root, max_size=max_size, sweep=False) as cache:
        for i in range(files):
            data = rnd.randbytes(size + i)
            key = f"train/shard{i % 4}/item{i:05d}.npz"
            cache.put(key, data)
            content[key] = data
    return content


def cache_content(root: Path) -> dict[str, bytes]:
    with Cache(root, sweep=False) as cache:
        out = {}
        for e in cache.entries("key"):
            out[e.key] = e.path.read_bytes()
        return out


def entry_count(root: Path) -> int:
    """Committed entries, seen from another process through the public API."""
    if not (root / ".cachewatch" / "index.sqlite").exists():
        return 0
    try:
        with Cache(root, readonly=True, sweep=False) as cache:
            return len(cache)
    except CacheError:  # the pull is still creating the cache (its index has no limits yet): nothing committed
        return 0


def write_config(path: Path, **sections: dict[str, object]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def object_files(remote: Path) -> list[Path]:
    return sorted(p for p in (remote / "objects").rglob("*") if p.is_file()) if (remote / "objects").exists() else []


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
