"""Errors of watched directories."""

from __future__ import annotations

from ..errors import CachewatchError

__all__ = ["WatchError"]


class WatchError(CachewatchError):
    """A watch that cannot be set up or run: bad root, bad limits, an unusable state directory."""
