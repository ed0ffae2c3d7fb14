"""The engine's alerts: raised by findings and thresholds, dismissed by people.

An alert has a ``key`` (its cause: ``memory``, ``cuda_oom:attempt-3``). Raising the same
key again while it is active bumps ``count`` and ``last_time`` instead of stacking copies,
so a memory threshold crossed every second is one alert, not three thousand. A condition
that goes away marks the alert inactive; raising it later makes a new alert.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Mapping

from .codec import frozen_map
from .snapshot import Alert

__all__ = ["AlertBoard", "SEVERITIES"]

SEVERITIES = ("info", "warning", "error", "critical")
_KEEP = 50


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
