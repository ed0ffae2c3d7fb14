"""Redis, made one way for the fleet and for the Redis-indexed cache: a redis-py client that
leaves reconnection to its caller, and URLs shown without their passwords."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redacted", "redis_client"]


def redacted(url: str, mask: str = "***") -> str:
    """The URL with its password replaced by ``mask``; with ``mask=""`` the password is left out
    altogether (a URL that can be stored and used again where the password comes from elsewhere)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    user = parts.username or ""
    if mask:
        netloc = f"{user}:{mask}@{netloc}"
    elif user:
        netloc = f"{user}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redis_client(url: str, *, timeout_s: float, block_s: float = 0.0, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None) -> Any:
    """A ``redis.Redis`` for ``url`` (not connected yet: the first command connects).

    ``block_s``: the longest blocking read the caller will issue, so that the socket timeout
    leaves room for it. Raises ImportError when redis-py is missing (the caller says how to
    install it). No retries of its own: callers handle an outage (one warning, back-off, a clear
    error), which redis-py's retries would hide.
    """
    import redis

    kwargs: dict[str, Any] = {
        "socket_timeout": timeout_s + block_s,
        "socket_connect_timeout": timeout_s,
        "retry_on_timeout": False,
    }
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs["retry"] = Retry(NoBackoff(), 0)
    except ImportError:  # pragma: no cover - very old redis-py
        pass
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    if url.startswith("rediss://") and ca_file is not None:
        kwargs["ssl_ca_certs"] = ca_file
    return redis.Redis.from_url(url, **kwargs)
