"""Fixtures for the job tests: a real source tree, a real cache, a transform module on disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cachewatch.engine import Cache

TRANSFORM = '''
import hashlib, os, time
from pathlib import Path

_DELAY_FILE = Path(__file__).with_name("delay.txt")  # read per item: in-process pools start from a
                                                     # forkserver whose environment is that of its start

def process(path):
    data = path.read_bytes()
    if path.name.startswith("bad"):
        raise ValueError("cannot parse " + path.name)
    if path.name.startswith("crash"):
        os.kill(os.getpid(), 9)  # a worker killed mid-item (a segfault, the OOM killer)
    delay = float(os.environ.get("TEST_TRANSFORM_DELAY", "0"))
    if _DELAY_FILE.exists():
        delay = float(_DELAY_FILE.read_text())
    if delay:
        time.sleep(delay)
    return hashlib.sha256(data).digest() + data[::-1]

def wrong_type(path):
    return 42
'''


@pytest.fixture
def transform_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "code"
    d.mkdir()
    (d / "jobs_test_prep.py").write_text(TRANSFORM)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("PYTHONPATH", str(d) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sys.modules.pop("jobs_test_prep", None)
    return d


def make_source(root: Path, n: int = 12, *, sizes: int = 3000, bad: int = 0) -> Path:
    """``n`` files under two subdirectories (plus ``bad`` files the transform rejects)."""
    src = root / "src"
    for i in range(n):
        sub = src / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"rec{i:03d}.edf").write_bytes(os.urandom(sizes + 37 * i))
    for i in range(bad):
        (src / "b").mkdir(parents=True, exist_ok=True)
        (src / "b" / f"bad{i}.edf").write_bytes(b"junk")
    return src


def write_config(root: Path, *, max_size: str = "10MB", transform: str | None = "jobs_test_prep:process",
                 key: str = "{relpath}.bin", preflight: str = "off", extra: str = "") -> Path:
    cfg = root / "cachewatch.toml"
    lines = ["[cache]", 'root = "cache"', f'max_size = "{max_size}"', "", "[source]", 'dir = "src"', 'glob = "**/*.edf"', f'key = "{key}"']
    if transform:
        lines.append(f'transform = "{transform}"')
    lines += ["", "[run]", f'preflight = "{preflight}"', extra]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def entries_by_key(root: Path) -> dict[str, tuple[str | None, int]]:
    with Cache(root, sweep=False) as c:
        return {e.key: (e.checksum, e.size_bytes) for e in c.entries(order="key")}
