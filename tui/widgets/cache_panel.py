"""Cache panel: one block per managed cache and per watched directory.

Each block: the root, a gauge of the size against max with the target marked, the
figures people used to get from ``du -sh`` and the training log (entries, hit rate,
bytes reserved by writes in flight, free disk), and the size history as a sparkline.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from cachewatch.engine.daemon.snapshot import CacheView, EngineSnapshot
from cachewatch.engine.watch.stats import WatchStats

from .. import format as fmt
from .panel import Panel

__all__ = ["CachePanel"]


class CachePanel(Panel):
    TITLE = "Cache"

    def draw(self, snap: EngineSnapshot, width: int) -> RenderableType:
        blocks: list[RenderableType] = []
        for view in snap.caches:
            blocks.append(self._managed(view, width))
        for watched in snap.watched:
            blocks.append(self._watched(watched, width))
        if not blocks:
            return Text("no cache configured: set [cache] root and max_size in cachewatch.toml", style="dim")
        return Group(*blocks)

    def _gauge_line(self, used: int, maximum: int, target: int, width: int) -> Text:
        figures = f" {fmt.size(used)}/{fmt.size(maximum)}"
        bar_width = max(6, width - len(figures))
        line = fmt.gauge(bar_width, used, maximum, mark=target)
        over = used > maximum
        line.append(figures, "bold red" if over else "bold")
        return fmt.one_line(line)

    def _managed(self, view: CacheView, width: int) -> RenderableType:
        head = fmt.one_line(Text(fmt.shorten_path(view.root, width), style="bold"))
        s = view.stats
        if s is None:
            return Group(head, Text(view.error or "no figures yet", style="red" if view.error else "dim"))
        used = s.used_bytes
        lines: list[RenderableType] = [head, self._gauge_line(used, s.max_bytes, s.target_bytes, width)]
        lines.extend(self._history_line(self.history.cache_bytes.get(view.root, ()), width))
        items: list[Text | str] = []
        if used > s.max_bytes:
            items.append(Text("OVER MAX", "bold white on red"))
        items.append(Text(f"target {fmt.size(s.target_bytes)}", "yellow"))
        items.append(f"hit {fmt.percent(s.hit_rate) if (s.hits + s.misses) else '--'}")
        items.append(f"{s.entries} entries")
        if view.disk_free_bytes is not None:
            items.append(f"free {fmt.size(view.disk_free_bytes)}")
        items.append(f"reserved {fmt.size(s.reserved_bytes)}" + (f" ({s.writers} writing)" if s.writers else ""))
        if s.evicted_files:
            items.append(f"evicted {s.evicted_files} ({fmt.size(s.evicted_bytes)})")
        if s.index is not None:  # a Redis-indexed cache on shared storage: one bound for every node
            noun = "node" if len(s.nodes) == 1 else "nodes"
            items.append(Text(f"shared by {len(s.nodes)} {noun}", "cyan"))
            if s.quarantined_bytes:
                items.append(Text(f"quarantined {fmt.size(s.quarantined_bytes)}", "yellow"))
        lines.extend(fmt.pack(items, width))
        if view.error:
            lines.append(Text(view.error, style="red"))
        return Group(*lines)

    def _history_line(self, history: tuple[float, ...], width: int) -> list[RenderableType]:
        if len(history) < 2:
            return []
        label = " size"
        return [fmt.one_line(fmt.sparkline(history, max(1, width - len(label))) + Text(label, style="dim"))]

    def _watched(self, view: WatchStats, width: int) -> RenderableType:
        """A ``[[watch]]`` directory."""
        root = view.root
        size_bytes = view.size_bytes
        max_bytes = view.max_bytes
        target = view.target_bytes
        head = Text(fmt.shorten_path(root, max(1, width - 10)), style="bold")
        head.append(" (watched)", "dim")
        lines: list[RenderableType] = [fmt.one_line(head), self._gauge_line(size_bytes, max_bytes, target, width)]
        lines.extend(self._history_line(self.history.watched_bytes.get(root, ()), width))
        items: list[Text | str] = []
        if size_bytes > max_bytes:
            items.append(Text("OVER MAX", "bold white on red"))
        items.append(Text(f"target {fmt.size(target)}", "yellow"))
        items.append(f"{view.entries} files")
        free = view.disk_free_bytes
        if free is not None:
            items.append(f"free {fmt.size(free)}")
        growth = view.growth_bytes_per_min
        if growth:
            items.append(f"+{fmt.size(growth)}/min")
        to_max = view.time_to_max_s
        if to_max is not None:
            items.append(f"max in {fmt.duration(to_max)}")
        evicted = view.evicted_files
        if evicted:
            items.append(f"evicted {evicted} ({fmt.size(view.evicted_bytes)})")
        if view.dry_run:
            items.append(Text("dry run", "bold magenta"))
        lines.extend(fmt.pack(items, width))
        return Group(*lines)
