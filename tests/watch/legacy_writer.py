"""A DataLoader worker's image cache as seed 000 had it before the fix, for tests and benchmarks.

Each process keeps its own size counter and evicts *after* writing, so N workers
together hold up to N times the limit (seed 000: 12 workers, a 100 GB limit, 219 GB
on disk). The one liberty taken: ``unlink(missing_ok=True)``, because cachewatch
may have removed the file already (code that crashes on that needs that one fix).

Usage: legacy_writer.py CACHE_DIR MAX_BYTES WORKER_ID FILES FILE_BYTES FILES_PER_S LOG
``FILES_PER_S`` 0 writes at full speed. LOG gets one JSON line per file (time, bytes)
and a last line with the totals.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path


class LRUImageCache:
    def __init__(self, cache_dir: str, max_size_bytes: int) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_size_bytes = max_size_bytes
        self.files: OrderedDict[Path, int] = OrderedDict()
        self.current_size_bytes = 0

    def put(self, url: str, image_bytes: bytes) -> Path:
        name = hashlib.md5(url.encode()).hexdigest() + ".jpg"
        filepath = self.cache_dir / name[:2] / name
        filepath.parent.mkdir(exist_ok=True)
        filepath.write_bytes(image_bytes)  # write first...
        self.files[filepath] = len(image_bytes)
        self.current_size_bytes += len(image_bytes)
        self._evict_lru()  # ...evict after, by this process's own counter
        return filepath

    def _evict_lru(self) -> None:
        while self.current_size_bytes > self.max_size_bytes and self.files:
            path, size = self.files.popitem(last=False)
            path.unlink(missing_ok=True)
            self.current_size_bytes -= size


def main() -> int:
    cache_dir, max_bytes, worker, n, size, rate, log = sys.argv[1:8]
    cache = LRUImageCache(cache_dir, int(max_bytes))
    n, size, rate = int(n), int(size), float(rate)
    payload = os.urandom(size)
    t0 = time.time()
    written = 0
    with open(log, "w") as out:
        for i in range(n):
            if rate > 0:
                delay = t0 + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            cache.put(f"https://images.example/{worker}/{i}", payload)
            written += size
            out.write(json.dumps({"t": time.time(), "bytes": size}) + "\n")
        out.write(json.dumps({"done": True, "written": written, "own_counter": cache.current_size_bytes}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
