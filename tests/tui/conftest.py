"""Dashboard tests: fixed local time for snapshot tests, and real headless engines for Pilot tests."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.daemon.util import EngineEnv, sweep


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Times on screen are local; snapshots must not depend on the machine's zone.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def engine_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineEnv]:
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
