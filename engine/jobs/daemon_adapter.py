"""The jobs as the headless engine runs them: ``(engine, args, ctx) -> result mapping``.

The engine's runner (``daemon/jobrunner.py``) gives each job function a
:class:`~.base.JobContext`; :func:`job_factories` builds the job a client asked for from
its JSON arguments and runs it with that context, so wiring is one line in the engine's parts::

    from cachewatch.engine.jobs.daemon_adapter import job_factories
    parts.jobs.update(job_factories())

``args`` are the command's JSON arguments (see :func:`job_from_args`); paths default to
the engine's config. A cancelled job raises :class:`JobCancelled` (a CachewatchError)
after undoing what it had half done.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..config import Config
from ..errors import CachewatchError
from .base import Job, JobContext, execute
from .build import BuildJob
from .source import SourceSpec
from .split import SplitJob, SplitOptions
from .verify import VerifyJob

__all__ = ["job_from_args", "job_factories", "JOB_ARGS"]

JOB_ARGS: dict[str, dict[str, str]] = {
    "verify": {
        "root": "cache directory (default: [cache] root)",
        "repair": "true to repair",
        "quick": "true: sizes only, no hashing",
        "workers": "hashing threads",
        "source": "source directory (default: [source] dir)",
    },
    "build": {"root": "cache directory (default: [cache] root)", "workers": "worker processes", "source": "source directory"},
    "split": {
        "input": "file or directory", "output": "directory", "traces_per_batch": "items per sub-batch (250)",
        "compress": "true (default) or false", "compress_level": "0-9 (6)", "validate": "true (default)",
        "delete_original": "true to delete inputs after validation; needs confirmed = true", "confirmed": "the user said yes",
        "pattern": "*.pkl*", "workers": "threads", "overwrite": "bool", "skip_existing": "bool",
    },
}


class BadJobArgs(CachewatchError):
    pass


def _bool(args: Mapping[str, Any], name: str, default: bool = False) -> bool:
    v = args.get(name, default)
    if not isinstance(v, bool):
        raise BadJobArgs(f"{name} = {v!r} must be true or false")
    return v


def _int(args: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    v = args.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BadJobArgs(f"{name} = {v!r} must be a whole number of at least 1")
    return v


def _level(args: Mapping[str, Any]) -> int:
    v = args.get("compress_level", 6)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9:
        raise BadJobArgs(f"compress_level = {v!r} must be a whole number from 0 to 9")
    return v


def _str(args: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    v = args.get(name, default)
    if v is not None and not isinstance(v, str):
        raise BadJobArgs(f"{name} = {v!r} must be a string")
    return v


def job_from_args(kind: str, args: Mapping[str, Any], config: Config) -> Job:
    """Build the job a client asked for; :class:`CachewatchError` naming the bad argument."""
    unknown = set(args) - set(JOB_ARGS.get(kind, {}))
    if kind not in JOB_ARGS:
        raise BadJobArgs(f"no job kind {kind!r}; known: {', '.join(JOB_ARGS)}")
    if unknown:
        raise BadJobArgs(f"{kind}: unknown argument {sorted(unknown)[0]!r}; known: {', '.join(JOB_ARGS[kind])}")
    source = SourceSpec.from_config(config, dir=_str(args, "source"))
    if kind == "verify":
        root = _str(args, "root") or (str(config.cache.root) if config.cache.root else None)
        if root is None:
            raise BadJobArgs("verify needs a cache: pass root or set [cache] root")
        return VerifyJob(root, source=source if source.configured else None, repair=_bool(args, "repair"),
                         workers=_int(args, "workers"), checksums=not _bool(args, "quick"))
    if kind == "build":
        return BuildJob.from_config(config, root=_str(args, "root"), source=source.require(), workers=_int(args, "workers"))
    inp, out = _str(args, "input"), _str(args, "output")
    if not inp or not out:
        raise BadJobArgs("split needs input and output")
    delete = _bool(args, "delete_original")
    if delete and not _bool(args, "confirmed"):
        raise BadJobArgs("delete_original needs confirmed = true: ask the user first")
    opts = SplitOptions(
        input=inp, output=out, traces_per_batch=_int(args, "traces_per_batch", 250) or 250,
        compress=_bool(args, "compress", True), compress_level=_level(args),
        delete_original=delete, validate=_bool(args, "validate", True), pattern=_str(args, "pattern", "*.pkl*") or "*.pkl*",
        workers=_int(args, "workers"), overwrite=_bool(args, "overwrite"), skip_existing=_bool(args, "skip_existing"),
    )
    return SplitJob(opts.checked())


def job_factories() -> dict[str, Callable[[Any, Mapping[str, Any], JobContext], Mapping[str, Any]]]:
    """``{"verify": f, "build": f, "split": f}`` with ``f(engine, args, ctx) -> report mapping``.

    ``ctx`` is the runner's :class:`JobContext`, handed to the job as it is: progress keeps
    its phase, bytes and ETA. Split runs in a child process (see :func:`execute`).
    """

    def make(kind: str) -> Callable[[Any, Mapping[str, Any], JobContext], Mapping[str, Any]]:
        def factory(engine: Any, args: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
            return execute(job_from_args(kind, dict(args or {}), engine.config), ctx)

        factory.__name__ = f"{kind}_job"
        return factory

    return {k: make(k) for k in ("verify", "build", "split")}
