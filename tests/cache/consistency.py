"""The strongest check after any test: the index and the files agree exactly."""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from cachewatch.engine import Cache


def assert_index_matches_files(root: Path, *, value_check=None) -> int:
    """Open the cache (which runs start-up recovery) and compare every row with the disk."""
    with Cache(root, sweep=False) as cache:
        snap = cache.snapshot()
        assert snap.writing == (), "reservations survived recovery"
        assert snap.replaced == (), "replaced versions survived with no reader"
        live = {r.name: r for r in snap.live}
        files = {}
        for shard in root.iterdir():
            if shard.name == ".cachewatch":
                continue
            for f in shard.iterdir():
                files[f"{shard.name}/{f.name}"] = f
        assert set(files) == set(live), f"files without rows: {set(files) - set(live)}; rows without files: {set(live) - set(files)}"
        charged = 0
        for name, row in live.items():
            data = files[name].read_bytes()
            assert len(data) == row.size, f"{name}: {len(data)} bytes on disk, index says {row.size}"
            assert xxhash.xxh3_64_hexdigest(data) == row.checksum, f"{name}: checksum differs from the index"
            assert os.stat(files[name]).st_ino == row.ino
            if value_check is not None:
                assert value_check(data), f"{name}: value is not a complete value"
            charged += row.charge
        c = snap.counters
        assert (c.live_bytes, c.entries, c.reserved_bytes, c.writers, c.replaced_bytes) == (charged, len(live), 0, 0, 0)
        assert c.used_bytes <= cache.max_bytes
        s = cache.stats()
        assert (s.reserved_bytes, s.writers) == (0, 0), "reservations of dead writers survived recovery"
        assert os.listdir(root / ".cachewatch" / "tmp") == [], "stale .part files left"
        return len(live)
