"""Shared fixtures. Real files, real processes; see README 'Tests'."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.fleet.redis_server import REDIS_MISSING, RedisServer
from tests.support.engine import EngineEnv, sweep

@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never pick up a developer's cachewatch.toml or CACHEWATCH_* settings.
    for name in list(os.environ):
        if name.startswith("CACHEWATCH_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(exist_ok=True, mode=0o700)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """Mount real tmpfs file systems of a given size: ``tmpfs("4MiB") -> Path``. Needs root (CI is root)."""
    import subprocess

    from cachewatch.engine.sizes import parse_size

    mounts: list[Path] = []

    def make(size: str) -> Path:
        d = tmp_path / f"tmpfs{len(mounts)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={parse_size(size)},mode=0755", "tmpfs", str(d)], check=True)
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.fixture
def engine_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineEnv]:
    """A private runtime and state directory for headless engines, and a sweep afterwards that
    kills every process the test left behind."""
    run = Path(tempfile.mkdtemp(prefix="cw-", dir="/tmp"))  # short: a socket path must fit in 107 bytes
    os.chmod(run, 0o700)
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.chdir(tmp_path)
    env = EngineEnv(runtime=run / "cachewatch", state=state, tmp=tmp_path)
    try:
        yield env
    finally:
        sweep((str(run), str(state)))
        shutil.rmtree(run, ignore_errors=True)


def _redis(directory: Path, extra: tuple[str, ...] = ()) -> Iterator[RedisServer]:
    """A real redis-server of the test's own. Missing: the test fails (never skips) saying how to install it."""
    try:
        server = RedisServer(directory, extra=extra)
    except RuntimeError:
        pytest.fail(REDIS_MISSING)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server, no persistence (the fleet: what is published is current or nothing)."""
    yield from _redis(tmp_path / "redis")


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server with an append-only file fsync'd every second, as docs/cache.md
    recommends for a cache index: a test may stop it and start it again on the same data."""
    yield from _redis(tmp_path / "redis-aof", ("--appendonly", "yes", "--appendfsync", "everysec"))
