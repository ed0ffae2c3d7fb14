"""Fixtures of the Redis-indexed cache tests: a real redis-server, TCP proxies, a tmpfs root.

A missing redis-server fails these tests with the install hint (tests/conftest.py); it never
skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.fleet.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def redis_server(redis_aof: RedisServer) -> RedisServer:
    """Every server of these tests has its append-only file (fsync'd every second), as
    docs/cache.md recommends for a cache index: a test may stop it and start it again."""
    return redis_aof


@pytest.fixture
def proxy_to(redis_server: RedisServer) -> Iterator[Callable[[], TcpProxy]]:
    """``proxy_to() -> TcpProxy``: one more TCP path to the test's Redis (one per "node")."""
    made: list[TcpProxy] = []

    def make() -> TcpProxy:
        p = TcpProxy(redis_server.port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def shared_root(tmpfs) -> Path:  # type: ignore[no-untyped-def]
    """The directory that stands in for shared storage: a private tmpfs, so nothing else's
    files share it and a full disk cannot be what stops a writer."""
    return tmpfs("256MiB") / "cache"
