"""Fixtures for engine tests: a private runtime and state directory per test, and a sweep
afterwards that kills every process the test left behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from .util import EngineEnv, sweep


@pytest.fixture
def engine_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineEnv]:
    # Short, because a Unix socket path must fit in 107 bytes and pytest's tmp_path may not.
    run = Path(tempfile.mkdtemp(prefix="cw-", dir="/tmp"))
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
