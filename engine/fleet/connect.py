"""A redis-py client from ``[fleet]``: ACL user and password, TLS with ``rediss://``."""

from __future__ import annotations

from typing import Any

from ..config import FleetConfig
from ..errors import ConfigError
from ..redisutil import redacted, redis_client

__all__ = ["connect", "redacted", "FleetUnavailable"]


class FleetUnavailable(ConfigError):
    """redis-py is not installed, or no fleet is configured."""


def connect(cfg: FleetConfig, *, timeout_s: float = 2.0, block_s: float = 0.0) -> Any:
    """A ``redis.Redis`` (not connected yet: the first command connects). ``block_s``: the longest
    blocking read this client will issue, so that its socket timeout leaves room for it."""
    if cfg.url is None:
        raise FleetUnavailable("no fleet is configured; set [fleet] url = 'redis://host:6379/0' or CACHEWATCH_FLEET_URL")
    try:
        return redis_client(cfg.url, timeout_s=timeout_s, block_s=block_s, username=cfg.username, password=cfg.password,
                            ca_file=str(cfg.ca_file) if cfg.ca_file is not None else None)
    except ImportError:
        raise FleetUnavailable("the fleet needs redis-py; install it with `pip install 'cachewatch[redis]'`") from None
