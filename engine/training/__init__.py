"""The supervised training: launching, progress, ETA, OOM recognition, the reporting API.

``report`` is the module training scripts call (stdlib only, cheap to import). The rest
is for the supervisor, the daemon and the dashboard: output parsing, progress snapshots
with an ETA, and OOM and exit diagnosis. None of it imports torch or Textual.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from . import report

# Everything but ``report`` loads on first use, so a training script that imports the
# reporting API does not pay for the parsers' regular expressions or the ETA machinery.
_LAZY = {
    "EpochTiming": ".eta",
    "EtaEstimate": ".eta",
    "EtaEstimator": ".eta",
    "Alert": ".feed",
    "ProgressFeed": ".feed",
    "CudaOomAlert": ".oom",
    "ExitDiagnosis": ".oom",
    "HostOomAlert": ".oom",
    "OomDetector": ".oom",
    "cgroup_oom_kills": ".oom",
    "classify_exit": ".oom",
    "parse_cuda_oom": ".oom",
    "parse_host_oom": ".oom",
    "OutputParser": ".parsers",
    "ParsedProgress": ".parsers",
    "parse_line": ".parsers",
    "strip_ansi": ".parsers",
    "ProgressSnapshot": ".progress",
    "ProgressTracker": ".progress",
    "OnDemandBuildDetector": ".ondemand",
    "judge_on_demand_build": ".ondemand",
    "ReportReader": ".records",
    "ReportRecord": ".records",
    "parse_report_line": ".records",
}

if TYPE_CHECKING:
    from .eta import EpochTiming, EtaEstimate, EtaEstimator
    from .feed import Alert, ProgressFeed
    from .oom import (
        CudaOomAlert,
        ExitDiagnosis,
        HostOomAlert,
        OomDetector,
        cgroup_oom_kills,
        classify_exit,
        parse_cuda_oom,
        parse_host_oom,
    )
    from .parsers import OutputParser, ParsedProgress, parse_line, strip_ansi
    from .progress import ProgressSnapshot, ProgressTracker
    from .ondemand import OnDemandBuildDetector, judge_on_demand_build
    from .records import ReportReader, ReportRecord, parse_report_line


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "report",
    "ProgressFeed",
    "Alert",
    "ProgressTracker",
    "ProgressSnapshot",
    "EtaEstimator",
    "EtaEstimate",
    "EpochTiming",
    "OutputParser",
    "ParsedProgress",
    "parse_line",
    "strip_ansi",
    "ReportReader",
    "ReportRecord",
    "parse_report_line",
    "CudaOomAlert",
    "HostOomAlert",
    "OomDetector",
    "ExitDiagnosis",
    "classify_exit",
    "parse_cuda_oom",
    "parse_host_oom",
    "cgroup_oom_kills",
    "OnDemandBuildDetector",
    "judge_on_demand_build",
]
