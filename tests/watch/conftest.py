"""Fixtures for watched-directory tests: real directories, real processes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under ``root``, never following symlinks: the truth."""
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                files += 1
    return total, files


def write(path: Path, size: int, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if age_s:
        t = os.stat(path).st_mtime - age_s
        os.utime(path, (t, t))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    p = tmp_path / "cache"
    p.mkdir()
    return p


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    p = tmp_path / "outside"
    p.mkdir()
    return p
