"""Fixtures of the Redis-indexed cache tests: a real redis-server, TCP proxies, a tmpfs root.

A missing redis-server fails these tests with the install hint; it never skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.fleet.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

REDIS_MISSING_CACHE = (
    "redis-server is not installed; the Redis-indexed cache tests need a real one: "
    "`apt-get install -y redis-server` (Debian/Ubuntu package redis-server)"
)

# Append-only file, fsync'd every second: what docs/cache.md recommends for a cache index, and
# what lets a test stop the server (SIGTERM) and start it again on the same files.
AOF = ("--appendonly", "yes", "--appendfsync", "everysec")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own (AOF on), stopped afterwards."""
    try:
        server = RedisServer(tmp_path / "redis", extra=AOF)
    except RuntimeError:
        pytest.fail(REDIS_MISSING_CACHE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
