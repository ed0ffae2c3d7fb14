"""A snapshot source that serves fixed snapshots: the boundary the snapshot tests drive.

The dashboard's only input is ``EngineSnapshot`` values (plus output lines); feeding it
fixed ones makes its screens deterministic. Commands are recorded and answered from a
small script, so a snapshot test can also show what follows a key.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from cachewatch.engine.daemon.errors import CommandFailed
from cachewatch.engine.daemon.results import CommandResult
from cachewatch.engine.daemon.snapshot import EngineSnapshot
from cachewatch.tui.history import History
from cachewatch.tui.source import Update

LOG_LINES = (
    "training 27.8M parameters on 143979 items, 15 epochs x 5625 steps, 12 workers",
    "Epoch 4/15 step 1500/5625 loss 0.4213",
    "INFO - Evicted 1500 files (15000.0MB) from cache",
    "Epoch 4/15 step 1510/5625 loss 0.4170",
    "Epoch 4/15 step 1520/5625 loss 0.4127",
)


def fixed_history(snap: EngineSnapshot, points: int = 120) -> History:
    """A saw-tooth of cache size (fill to max, evict to target) and a steady GPU, as seed 000's training."""
    cache: dict[str, tuple[float, ...]] = {}
    for c in snap.caches:
        if c.stats is None:
            continue
        lo, hi = c.stats.target_bytes, c.stats.max_bytes
        cache[c.root] = tuple(lo + (hi - lo) * ((i % 30) / 30) for i in range(points))
    util = {0: tuple(float(25 + (i * 7) % 15) for i in range(points))}
    mem = {0: tuple(float(3.6e9 + ((i * 13) % 5) * 4e7) for i in range(points))}
    return History(cache_bytes=cache, gpu_util_percent=util, gpu_memory_bytes=mem)


class FixedSource:
    name = "aplantida"

    def __init__(self, snapshot: EngineSnapshot, *, log_lines: tuple[str, ...] = LOG_LINES,
                 replies: Mapping[str, Callable[[Mapping[str, Any]], CommandResult]] | None = None) -> None:
        self.snapshot = snapshot
        self.history = fixed_history(snapshot)
        self.log_lines = log_lines
        self.replies = dict(replies or {})
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self._first = True

    def poll(self) -> Update:
        first, self._first = self._first, False
        return Update(self.snapshot, self.history, self.log_lines if first else (), log_reset=first)

    def command(self, name: str, args: Mapping[str, Any]) -> CommandResult:
        self.commands.append((name, dict(args)))
        reply = self.replies.get(name)
        if reply is None:
            raise CommandFailed(f"{name}: not scripted in this test", "unavailable")
        return reply(args)

    def close(self) -> None:
        pass
