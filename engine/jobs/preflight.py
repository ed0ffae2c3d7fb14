"""Pre-flight: before the training starts, is the cache complete for the configured source?

Seed 004 lost days because nothing checked: 246 of 3734 files were cached, in a
directory other than the configured one, and the rest was built during training at
27 s per batch. ``[run] preflight`` decides what happens before launch:

``off``      no check.
``warn``     check; an incomplete cache is reported and the training starts anyway.
``require``  check; an incomplete cache refuses the launch with a message that says
             what is missing and how to fix it.
``build``    check; build what is missing (the ``build`` job), check again, and refuse
             only if items still fail.
``pull``     check; pull what is missing from ``[cache] remote`` (``cachewatch cache pull``,
             every object verified), check again, and refuse if items are still missing.

The check is quick on purpose: each source item's key must have a live index row whose
file exists with the recorded size. It does not hash (``cachewatch verify`` does).
Messages always name the cache's absolute path and where it was configured, so a
cache that is not where the training looks is obvious.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..errors import CachewatchError, ConfigError
from .base import CancelToken, JobContext, JobEvent
from .build import BuildJob, BuildReport
from .cache_access import cache_paths, open_index
from .source import SourceItem, SourceSpec

__all__ = ["run_preflight", "check_completeness", "PreflightResult", "PreflightRefused", "Completeness", "MODES"]

MODES = ("off", "warn", "require", "build", "pull")


class PreflightRefused(CachewatchError):
    """The cache is not complete and ``preflight = "require"`` (or the build left items missing)."""

    exit_code = 1

    def __init__(self, message: str, result: "PreflightResult | None" = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Completeness:
    root: str
    source: str
    source_items: int
    cached_items: int
    missing: tuple[str, ...]  # keys, at most `limit` of them
    missing_count: int
    cache_exists: bool

    @property
    def complete(self) -> bool:
        return self.missing_count == 0

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["missing"] = list(self.missing)
        out["complete"] = self.complete
        return out


@dataclass(frozen=True)
class PreflightResult:
    mode: str
    ok: bool  # the training may start
    message: str  # one line (empty when off)
    checked: bool
    completeness: Completeness | None = None
    build: dict[str, Any] | None = None  # BuildReport.to_json() when mode = build ran a build
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def raise_if_refused(self) -> None:
        if not self.ok:
            raise PreflightRefused(self.message, self)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["completeness"] = self.completeness.to_json() if self.completeness else None
        out["warnings"] = list(self.warnings)
        return out


def _where(cfg: Config) -> str:
    return f"[cache] root in {cfg.path}" if cfg.path else "[cache] root"


def check_completeness(root: str | os.PathLike, items: list[SourceItem], source: SourceSpec, *, limit: int = 20) -> Completeness:
    """Which source items have a sound-looking entry (live row, file present, recorded size)."""
    root_path = Path(os.path.abspath(root))
    if not (root_path / ".cachewatch" / "index.sqlite").is_file():
        keys = tuple(it.key for it in items[:limit])
        return Completeness(str(root_path), source.describe(), len(items), 0, keys, len(items), False)
    paths = cache_paths(root_path)
    idx = open_index(paths)
    try:
        rows = {r.key: r for r in idx.iter_live("key")}
    finally:
        idx.close()
    missing: list[str] = []
    count = 0
    for it in items:
        row = rows.get(it.key)
        ok = False
        if row is not None:
            try:
                ok = os.stat(paths.root / row.name).st_size == row.size
            except OSError:
                ok = False
        if not ok:
            count += 1
            if len(missing) < limit:
                missing.append(it.key)
    return Completeness(str(paths.root), source.describe(), len(items), len(items) - count, tuple(missing), count, True)


def _incomplete_line(c: Completeness, cfg: Config) -> str:
    if not c.cache_exists:
        head = f"cache '{c.root}' ({_where(cfg)}) does not exist yet: 0 of {c.source_items} source items cached"
    else:
        head = f"cache '{c.root}' ({_where(cfg)}) is incomplete: {c.cached_items} of {c.source_items} source items cached"
    example = f", e.g. {c.missing[0]!r}" if c.missing else ""
    return f"{head} ({c.missing_count} missing{example}); run `cachewatch build` first or set [run] preflight = \"build\""


def run_preflight(
    config: Config,
    mode: str | None = None,
    *,
    workers: int | None = None,
    ctx: JobContext | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    token: CancelToken | None = None,
) -> PreflightResult:
    """The check ``cachewatch run`` does before launching. ``mode`` defaults to ``[run] preflight``.

    Never raises for an incomplete cache: the result says ``ok`` or not, with the message
    (call :meth:`PreflightResult.raise_if_refused` to turn a refusal into an error).
    Raises :class:`ConfigError` when the check cannot be made (no source, no cache root).
    """
    mode = mode or config.run.preflight
    if mode not in MODES:
        raise ConfigError(f"[run] preflight = {mode!r} is not one of {', '.join(repr(m) for m in MODES)}")
    if mode == "off":
        return PreflightResult("off", True, "", checked=False)
    ctx = ctx or JobContext("preflight", "preflight", token, on_event)
    if config.cache.root is None:
        raise ConfigError(f"[run] preflight = {mode!r} needs [cache] root; set it in cachewatch.toml or set preflight = 'off'")
    source = SourceSpec.from_config(config)
    if not source.configured:
        raise ConfigError(
            f"[run] preflight = {mode!r} needs the source data: set [source] dir (and glob) or listing, or set preflight = 'off'"
        )
    items = source.items()
    ctx.progress("preflight", 0, len(items), message="checking the cache against the source")
    c = check_completeness(config.cache.root, items, source)
    if c.complete:
        return PreflightResult(mode, True, f"cache '{c.root}' is complete: {c.source_items} of {c.source_items} source items cached",
                               True, c)
    line = _incomplete_line(c, config)
    if mode == "warn":  # said once, by whoever launches (result.warnings), not also as an event
        return PreflightResult(mode, True, line, True, c, warnings=(line,))
    if mode == "require":
        return PreflightResult(mode, False, line, True, c)
    if mode == "pull":
        from .sync_job import preflight_pull  # the S3/volume code loads only when asked for

        return preflight_pull(config, mode, items, source, c, ctx, workers)

    # mode == "build"
    ctx.message(f"pre-flight: building {c.missing_count} missing entries in '{c.root}' before the training starts")
    job = BuildJob.from_config(config, source=source, workers=workers)
    report: BuildReport = job.run(ctx)  # builds only what is missing
    after = check_completeness(config.cache.root, items, source)
    if after.complete:
        return PreflightResult(mode, True, f"built {report.built} entries; cache '{after.root}' is complete", True, after,
                               build=report.to_json())
    if report.cancelled:
        msg = f"pre-flight build was cancelled; {after.cached_items} of {after.source_items} source items cached"
    else:
        fail = f" ({report.failed} items failed, e.g. {report.failures[0].path}: {report.failures[0].error})" if report.failures else ""
        msg = (
            f"cache '{after.root}' is still incomplete after the pre-flight build: {after.cached_items} of "
            f"{after.source_items} source items cached{fail}; fix the failing items and run `cachewatch build`"
        )
    return PreflightResult(mode, False, msg, True, after, build=report.to_json())
