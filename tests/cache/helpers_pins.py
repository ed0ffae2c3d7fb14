"""Processes for the pin tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cachewatch.engine import Cache


def hold_pin(root: str, key: str, release: str, report: str) -> None:
    cache = Cache(root, sweep=False)
    problems = []
    with cache.pin(key) as path:
        first = path.read_bytes()
        ino = os.stat(path).st_ino
        Path(report + ".tmp").write_text("pinned")
        os.rename(report + ".tmp", report)
        while not os.path.exists(release):
            try:
                if os.stat(path).st_ino != ino or path.read_bytes() != first:
                    problems.append("changed")
            except FileNotFoundError:
                problems.append("deleted")
            time.sleep(0.005)
    Path(report).write_text("ok" if not problems else ",".join(sorted(set(problems))))


def filler(root: str, prefix: str, n_bytes: int) -> None:
    cache = Cache(root, sweep=False)
    written = i = 0
    while written < n_bytes:
        data = os.urandom(32 * 1024)
        cache.put(f"{prefix}-{i}", data)
        written += len(data)
        i += 1
    cache.close()
