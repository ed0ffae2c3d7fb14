"""``[run] preflight = "pull"``: an incomplete cache is pulled from ``[cache] remote`` before the training starts."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.helpers import run_cli
from tests.sync.util import cache_content, object_files


def _project(tmp_path: Path, name: str, remote: Path) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "cachewatch.toml").write_text(
        f'[cache]\nroot = "cache"\nmax_size = "50MB"\nremote = "{remote}"\n'
        f'[source]\ndir = "{tmp_path / "data"}"\nglob = "*.bin"\n'
        f'[run]\npreflight = "pull"\n'
    )
    return d


def test_run_pulls_the_missing_entries_before_the_training_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(20):
        (data / f"item{i:03d}.bin").write_bytes(bytes([i]) * (1000 + i))
    remote = tmp_path / "volume"
    workstation = _project(tmp_path, "workstation", remote)
    assert run_cli("build", cwd=workstation).returncode == 0
    assert run_cli("cache", "push", cwd=workstation).returncode == 0

    cloud = _project(tmp_path, "cloud", remote)
    # The training checks that every item is in the cache when it starts: it fails if the pull did not happen first.
    check = (
        "import sys; from cachewatch.engine.cache import Cache; c = Cache('cache', sweep=False); "
        "missing = [f'item{i:03d}.bin' for i in range(20) if f'item{i:03d}.bin' not in c]; "
        "print('missing', len(missing)); sys.exit(1 if missing else 0)"
    )
    r = run_cli("run", "--", sys.executable, "-c", check, cwd=cloud)
    # The engine outlives its training (a detached `run`): stop it so no test leaves one behind.
    assert run_cli("stop", "--yes", cwd=cloud).returncode == 0
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pulled 20 entries" in r.stderr
    assert "missing 0" in r.stdout
    assert cache_content(cloud / "cache") == cache_content(workstation / "cache")
    assert run_cli("verify", cwd=cloud).returncode == 0  # checksums and completeness against the source


def test_run_is_refused_when_the_remote_cannot_complete_the_cache(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"item{i:03d}.bin").write_bytes(bytes([i]) * 500)
    remote = tmp_path / "volume"
    workstation = _project(tmp_path, "workstation", remote)
    assert run_cli("build", cwd=workstation).returncode == 0
    assert run_cli("cache", "push", cwd=workstation).returncode == 0
    obj = object_files(remote)[0]
    obj.write_bytes(b"damaged on the volume")
    cloud = _project(tmp_path, "cloud", remote)
    r = run_cli("run", "--", sys.executable, "-c", "open('started', 'w')", cwd=cloud)
    assert r.returncode == 1
    assert "still incomplete after pulling" in r.stderr and "corrupt or foreign" in r.stderr
    assert not (cloud / "started").exists()


def test_preflight_pull_needs_a_remote(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.bin").write_bytes(b"a")
    (tmp_path / "cachewatch.toml").write_text(
        f'[cache]\nroot = "cache"\nmax_size = "1MB"\n[source]\ndir = "{tmp_path / "data"}"\n[run]\npreflight = "pull"\n'
    )
    r = run_cli("verify", "--preflight", cwd=tmp_path)
    assert r.returncode == 2 and "needs [cache] remote" in r.stderr
