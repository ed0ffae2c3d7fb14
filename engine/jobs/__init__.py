"""Maintenance jobs: verify, build and split; each cancellable and reporting progress.

Every job is a :class:`Job` (``kind``, ``run(ctx)`` returning a report) that runs in
the foreground of a CLI command (:func:`run_job`) or under the engine's job runner
(``cachewatch.engine.daemon.jobrunner``) through :func:`execute`, which runs split in a
child process. Progress is one frozen type, :class:`JobProgress`, from job to dashboard.
"""

from .base import (
    STATUS_CANCELLED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PROBLEMS,
    CancelToken,
    Job,
    JobBusy,
    JobCancelled,
    JobContext,
    JobEvent,
    JobFailed,
    JobFinished,
    JobMessage,
    JobProgress,
    JobReport,
    JobStarted,
    event_from_json,
    execute,
    run_job,
)
from .build import BuildFailure, BuildJob, BuildReport, build_cache
from .preflight import Completeness, PreflightRefused, PreflightResult, check_completeness, run_preflight
from .recommend import Recommendation, recommend
from .source import SourceError, SourceItem, SourceSpec, load_transform
from .split import SplitInputResult, SplitJob, SplitOptions, SplitReport, plan_split, recommend_for, split_files
from .split_formats import SplitError, SplitInputError, SplitValidationError
from .verify import PROBLEM_KINDS, VerifyJob, VerifyProblem, VerifyReport, verify_cache

__all__ = [
    "Job",
    "JobReport",
    "JobContext",
    "CancelToken",
    "JobCancelled",
    "JobBusy",
    "JobEvent",
    "JobStarted",
    "JobProgress",
    "JobMessage",
    "JobFinished",
    "event_from_json",
    "run_job",
    "execute",
    "JobFailed",
    "STATUS_OK",
    "STATUS_PROBLEMS",
    "STATUS_FAILED",
    "STATUS_CANCELLED",
    "SourceSpec",
    "SourceItem",
    "SourceError",
    "load_transform",
    "VerifyJob",
    "VerifyReport",
    "VerifyProblem",
    "PROBLEM_KINDS",
    "verify_cache",
    "BuildJob",
    "BuildReport",
    "BuildFailure",
    "build_cache",
    "run_preflight",
    "check_completeness",
    "PreflightResult",
    "PreflightRefused",
    "Completeness",
    "SplitJob",
    "SplitOptions",
    "SplitReport",
    "SplitInputResult",
    "SplitError",
    "SplitInputError",
    "SplitValidationError",
    "plan_split",
    "split_files",
    "recommend_for",
    "recommend",
    "Recommendation",
]
