"""The engine's alerts: the rules that turn what the parts saw into findings, and the board
that raises them, dismissed by people.

Every rule is a pure function producing :class:`Finding` values, with its remedy text beside it:
the host's memory and disk thresholds, a watched directory's own alerts, the managed cache
over its limit, an OOM seen in the training's output, the training's exit, and the
on-demand-build rule of ``engine/training/ondemand.py``. A threshold rule answers
``{key: Finding or None}`` for every key it judges (None: the condition is gone). The engine
hands every finding to :class:`AlertBoard` the same way (``Engine._raise``), and nothing else
makes an alert.

An alert has a ``key`` (its cause: ``memory``, ``cuda_oom:attempt-3``). Raising the same
key again while it is active bumps ``count`` and ``last_time`` instead of stacking copies,
so a memory threshold crossed every second is one alert, not three thousand. A condition
that goes away marks the alert inactive; raising it later makes a new alert.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

from ..sizes import format_size
from .codec import frozen_map
from .snapshot import Alert

if TYPE_CHECKING:
    from ..cache.types import CacheStats
    from ..monitor.host import HostSnapshot
    from ..training.oom import CudaOomAlert, ExitDiagnosis, HostOomAlert
    from ..training.ondemand import OnDemandBuild
    from ..watch.stats import WatchStats

__all__ = [
    "AlertBoard",
    "SEVERITIES",
    "Finding",
    "Verdicts",
    "host_findings",
    "watch_findings",
    "cache_findings",
    "oom_finding",
    "exit_finding",
    "failed_restart_finding",
    "on_demand_finding",
]

SEVERITIES = ("info", "warning", "error", "critical")
_KEEP = 50


@dataclass(frozen=True)
class Finding:
    """Something seen in the training's output or exit, or a threshold crossed, that deserves an alert."""

    kind: str  # "cuda_oom", "host_oom", "host_oom_kill", "memory", ...
    severity: str
    title: str
    text: str = ""
    remedies: tuple[str, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=frozen_map)
    key: str | None = None  # alerts with the same key are one alert raised again


Verdicts = dict[str, "Finding | None"]  # key -> the finding, or None when its condition is gone

# ------------------------------------------------------------------------------------ rules
_HOST_RULES = {
    "memory": ("System memory is almost full",
               ("fewer DataLoader workers (num_workers)", "a smaller prefetch_factor or batch size",
                "stop other programs on this machine")),
    "disk": ("The cache's disk is almost full", ("lower [cache] max_size", "free space on that disk")),
}


def host_findings(host: HostSnapshot) -> Verdicts:
    """Memory and disk: the host sampler decides against the [monitor] thresholds."""
    out: Verdicts = {}
    for kind, (title, remedies) in _HOST_RULES.items():
        a = host.alert(kind)
        out[kind] = None if a is None else Finding(
            kind, "warning", title, a.message, remedies=remedies,
            figures={"used_fraction": a.used_fraction, "threshold": a.threshold}, key=kind)
    return out


WATCH_ALERT_KINDS = ("over_max", "eviction_blocked", "max_soon", "disk_full_soon", "events_lost", "root_gone")


def watch_findings(w: WatchStats) -> Verdicts:
    """A watched directory judges its own condition (over max, eviction blocked, filling up)."""
    live = {a.kind: a for a in w.alerts}
    out: Verdicts = {}
    for kind in WATCH_ALERT_KINDS:
        key = f"watch:{w.root}:{kind}"
        a = live.get(kind)
        out[key] = None if a is None else Finding(
            f"watch_{kind}", a.level if a.level in ("critical", "warning") else "info",
            f"Watched directory: {kind.replace('_', ' ')}", f"{w.root}: {a.message}",
            remedies=("evict now (key e)", "lower the [[watch]] max_size"), key=key)
    return out


def cache_findings(s: CacheStats) -> Verdicts:
    """The managed cache over its limit."""
    over = s.used_bytes > s.max_bytes
    return {"cache_over_max": None if not over else Finding(
        "cache_over_max", "error", "The cache is over its limit",
        f"{format_size(s.used_bytes)} used, max {format_size(s.max_bytes)}",
        remedies=("evict to the target (key e)", "something outside cachewatch writes into the cache root"),
        key="cache_over_max")}


def oom_finding(alert: CudaOomAlert | HostOomAlert, attempt: int) -> Finding:
    """An OOM seen in the training's output (``engine.training.oom``); its remedies come with it."""
    title = {"cuda_oom": "CUDA out of memory", "host_oom": "Host out of memory"}.get(alert.kind, alert.kind.replace("_", " "))
    figures = {k: v for k, v in alert.to_json().items() if k not in ("remedies", "summary", "kind")}
    return Finding(alert.kind, "critical" if alert.kind == "cuda_oom" else "error", title, alert.summary(),
                   remedies=tuple(alert.remedies), figures=frozen_map(figures), key=f"{alert.kind}:attempt-{attempt}")


def exit_finding(fields: Mapping[str, Any], diag: ExitDiagnosis | None, follow: str = "") -> Finding | None:
    """The training exited (``training.exited`` fields, the exit classifier's diagnosis if any);
    None when there is nothing to say: asked to stop, exit 0, or a CUDA OOM (its own alert, from
    the output, carries the figures). ``follow``: when the next restart comes."""
    code, sig, attempt = fields.get("exit_code"), fields.get("signal"), fields.get("attempt")
    if fields.get("requested") or (code == 0 and sig is None):
        return None
    title = f"Training {fields.get('reason', 'failed')}"
    figures = {"exit_code": code, "signal": sig, "attempt": attempt, "duration_s": fields.get("duration_s")}
    if diag is None:
        return Finding("training_exit", "error", title,
                       f"attempt {attempt} {fields.get('reason', '')}{follow}; the log tail says why", figures=figures,
                       key=f"training_exit:attempt-{attempt}")
    if diag.category in ("success", "stopped", "cuda_oom"):
        return None
    killed = diag.category == "host_oom_kill"
    kind = "host_oom_kill" if killed else "training_exit"
    return Finding(kind, "critical" if killed else "error",
                   "Training killed: probable host OOM kill" if killed else title,
                   f"attempt {attempt}: {diag.summary}{follow}", remedies=tuple(diag.hints), figures=figures,
                   key=f"{kind}:attempt-{attempt}")


def failed_restart_finding(error: str) -> Finding:
    return Finding("training_failed", "error", "The training could not be restarted", error)


def on_demand_finding(found: OnDemandBuild, attempt: int) -> Finding:
    """Seed 004's rule decided (``engine/training/ondemand.py``); the text and remedies are its own."""
    return Finding("cache_on_demand_build", "warning", found.title, found.text, remedies=found.remedies,
                   figures=dict(found.figures), key=f"cache_on_demand_build:attempt-{attempt}")


class AlertBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alerts: "OrderedDict[str, Alert]" = OrderedDict()  # id -> alert, oldest first
        self._active_by_key: dict[str, str] = {}  # key -> id of its active alert
        self._ids = itertools.count(1)

    def raise_alert(
        self,
        kind: str,
        severity: str,
        title: str,
        text: str = "",
        *,
        remedies: tuple[str, ...] = (),
        figures: Mapping[str, Any] | None = None,
        key: str | None = None,
        now: float,
    ) -> tuple[Alert, bool]:
        """The alert for ``key`` (new or raised again) and whether it is new."""
        if severity not in SEVERITIES:
            severity = "warning"
        key = key or kind
        with self._lock:
            aid = self._active_by_key.get(key)
            if aid is not None and aid in self._alerts:
                old = self._alerts[aid]
                alert = replace(old, count=old.count + 1, last_time=now, text=text or old.text,
                                figures=frozen_map(figures or old.figures))
                self._alerts[aid] = alert
                return alert, False
            aid = f"{kind}-{next(self._ids)}"
            alert = Alert(id=aid, kind=kind, severity=severity, title=title, text=text, remedies=tuple(remedies),
                          time=now, last_time=now, figures=frozen_map(figures))
            self._alerts[aid] = alert
            self._active_by_key[key] = aid
            while len(self._alerts) > _KEEP:
                old_id, _ = self._alerts.popitem(last=False)
                self._active_by_key = {k: v for k, v in self._active_by_key.items() if v != old_id}
            return alert, True

    def clear(self, key: str) -> Alert | None:
        """The condition behind ``key`` is gone; its alert stays listed, inactive."""
        with self._lock:
            aid = self._active_by_key.pop(key, None)
            if aid is None or aid not in self._alerts:
                return None
            alert = replace(self._alerts[aid], active=False)
            self._alerts[aid] = alert
            return alert

    def is_active(self, key: str) -> bool:
        with self._lock:
            return key in self._active_by_key

    def dismiss(self, alert_id: str) -> Alert:
        with self._lock:
            if alert_id not in self._alerts:
                raise KeyError(alert_id)
            alert = replace(self._alerts[alert_id], dismissed=True)
            self._alerts[alert_id] = alert
            return alert

    def alerts(self) -> tuple[Alert, ...]:
        """Newest first."""
        with self._lock:
            return tuple(reversed(self._alerts.values()))
