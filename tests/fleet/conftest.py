from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .redis_server import REDIS_MISSING, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of its own. Missing: the test fails (never skips) saying how to install it."""
    try:
        server = RedisServer(tmp_path / "redis")
    except RuntimeError:
        pytest.fail(REDIS_MISSING)
    server.start()
    try:
        yield server
    finally:
        server.stop()
