"""Shared fixtures. Real files, real processes; see README 'Tests'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
