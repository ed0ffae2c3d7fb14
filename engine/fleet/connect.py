"""A redis-py client from ``[fleet]``: ACL user and password, TLS with ``rediss://``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..config import FleetConfig
from ..errors import ConfigError

__all__ = ["connect", "redacted", "FleetUnavailable"]


class FleetUnavailable(ConfigError):
    """redis-py is not installed, or no fleet is configured."""


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(cfg: FleetConfig, *, timeout_s: float = 2.0, block_s: float = 0.0) -> Any:
    """A ``redis.Redis`` (not connected yet: the first command connects). ``block_s``: the longest
    blocking read this client will issue, so that its socket timeout leaves room for it."""
    if cfg.url is None:
        raise FleetUnavailable("no fleet is configured; set [fleet] url = 'redis://host:6379/0' or CACHEWATCH_FLEET_URL")
    try:
        import redis
    except ImportError:
        raise FleetUnavailable("the fleet needs redis-py; install it with `pip install 'cachewatch[redis]'`") from None
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout_s + block_s,
        "socket_connect_timeout": timeout_s,
        # Reconnection is ours (one warning, back-off); redis-py's own retries would hide an outage.
        "retry_on_timeout": False,
    }
    try:
        from redis.retry import Retry
        from redis.backoff import NoBackoff

        kwargs["retry"] = Retry(NoBackoff(), 0)
    except ImportError:  # pragma: no cover - very old redis-py
        pass
    if cfg.username:
        kwargs["username"] = cfg.username
    if cfg.password:
        kwargs["password"] = cfg.password
    if cfg.url.startswith("rediss://") and cfg.ca_file is not None:
        kwargs["ssl_ca_certs"] = str(cfg.ca_file)
    return redis.Redis.from_url(cfg.url, **kwargs)
