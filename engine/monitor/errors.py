"""Errors from the monitor: only for bad arguments. A missing GPU or a vanished process is a state, not an error."""

from __future__ import annotations

from ..errors import CachewatchError

__all__ = ["MonitorError"]


class MonitorError(CachewatchError):
    """A monitor setting that cannot be used (an interval of 0, a threshold above 1, a pid that is not a number)."""
