"""Push and pull as jobs (progress with bytes, rate and ETA; cancellable) and the ``pull`` pre-flight.

The transfer itself is :mod:`cachewatch.engine.sync`; this module only adapts it to the
job framework (``ctx.progress`` with ``bytes_done``/``bytes_total``, ``ctx.cancelled``)
so that the engine can run it for the dashboard, and to ``[run] preflight = "pull"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import Cache, index_kwargs
from ..cache.integrity import CacheLayout
from ..config import Config
from ..errors import ConfigError
from ..sync import SourceFingerprint, SyncError, SyncProgress, SyncReport, open_remote, pull, push
from ..sync.transfer import DEFAULT_WORKERS
from .base import Job, JobContext

if TYPE_CHECKING:
    from .preflight import Completeness, PreflightResult
    from .source import SourceItem, SourceSpec

__all__ = ["SyncJob", "open_config_cache", "preflight_pull"]


def _progress_to(ctx: JobContext) -> Any:
    def on_progress(p: SyncProgress) -> None:
        # The message repeats bytes, rate and ETA for runners that only forward (done, total, message).
        ctx.progress(p.phase, p.files_done, p.files_total, unit="files", bytes_done=p.bytes_done, bytes_total=p.bytes_total,
                     message=p.line().split("  ", 3)[-1] if p.bytes_total else "")

    return on_progress


def open_config_cache(config: Config, root: str | os.PathLike[str] | None = None, *, create: bool = True) -> Cache:
    """The cache of ``[cache]`` (or ``root``) with the configured limits; a new one needs ``[cache] max_size``."""
    path = Path(os.path.abspath(root if root is not None else config.cache.root or ""))
    if root is None and config.cache.root is None:
        raise ConfigError("no cache given: set [cache] root in cachewatch.toml")
    exists = CacheLayout.of(path).has_index()
    if not exists and (not create or config.cache.max_size is None):
        raise ConfigError(f"cache '{path}' does not exist yet; set [cache] max_size so that it can be created")
    return Cache(path, max_size=config.cache.max_size, target_ratio=config.cache.target_ratio,
                 target_size=config.cache.target_size, ttl=config.cache.ttl, sweep=False,
                 **(index_kwargs(config.cache) if root is None else {}))


class SyncJob(Job):
    """``kind`` "push" or "pull" between a cache directory and a remote URL."""

    def __init__(self, direction: str, root: str, url: str, *, config: Config, workers: int = DEFAULT_WORKERS,
                 dry_run: bool = False, source: SourceFingerprint | None = None) -> None:
        if direction not in ("push", "pull"):
            raise ValueError(direction)
        self.kind = direction
        self.root, self.url, self.config = root, url, config
        self.workers, self.dry_run, self.source = workers, dry_run, source

    def describe(self) -> str:
        return f"{self.kind} {self.root} {'->' if self.kind == 'push' else '<-'} {self.url}"

    def run(self, ctx: JobContext) -> SyncReport:
        remote = open_remote(self.url, create=self.kind == "push" and not self.dry_run, must_exist=self.kind == "pull",
                             workers=self.workers)
        try:
            with open_config_cache(self.config, self.root, create=self.kind == "pull") as cache:
                if self.kind == "push":
                    return push(cache, remote, source=self.source, workers=self.workers, dry_run=self.dry_run,
                                on_progress=_progress_to(ctx), cancelled=lambda: ctx.cancelled)
                return pull(cache, remote, workers=self.workers, dry_run=self.dry_run,
                            on_progress=_progress_to(ctx), cancelled=lambda: ctx.cancelled)
        finally:
            remote.close()


def preflight_pull(config: Config, mode: str, items: "list[SourceItem]", source: "SourceSpec", before: "Completeness",
                   ctx: JobContext, workers: int | None) -> "PreflightResult":
    """``[run] preflight = "pull"``: fetch what the cache lacks from ``[cache] remote``, then check again."""
    from .preflight import PreflightResult, check_completeness

    url = config.cache.remote
    if not url:
        raise ConfigError("[run] preflight = 'pull' needs [cache] remote (s3://bucket/prefix or a directory); set it in cachewatch.toml")
    assert config.cache.root is not None
    ctx.message(f"pre-flight: pulling the {before.missing_count} missing entries of '{before.root}' from {url} before the training starts")
    try:
        job = SyncJob("pull", str(config.cache.root), url, config=config, workers=workers or DEFAULT_WORKERS)
        report = job.run(ctx)
    except SyncError as exc:
        after = check_completeness(config.cache.root, items, source)
        return PreflightResult(mode, False, f"cache '{after.root}' is incomplete ({after.cached_items} of {after.source_items} "
                                            f"source items cached) and the pre-flight pull failed: {exc}", True, after)
    after = check_completeness(config.cache.root, items, source)
    if after.complete:
        return PreflightResult(mode, True, f"pulled {report.files_transferred} entries from {url}; cache '{after.root}' is complete",
                               True, after)
    why = f" ({report.problem_count} problems, e.g. {report.problems[0]})" if report.problems else ""
    return PreflightResult(
        mode, False,
        f"cache '{after.root}' is still incomplete after pulling from {url}: {after.cached_items} of {after.source_items} "
        f"source items cached{why}; push a complete cache where it was built (`cachewatch cache push`) or set preflight = 'build'",
        True, after,
    )
