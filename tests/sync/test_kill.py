"""kill -9 in the middle of a push and of a pull, then run it again: it resumes and ends correct."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import run_cli, wait_for
from tests.sync.util import cache_content, entry_count, make_cache, object_files

FILES = 1500


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cachewatch.tui.cli", *args],
        env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _kill9(proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, "the transfer finished before it could be killed; make the test cache bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_kill9_mid_push_commits_nothing_and_the_next_push_resumes(tmp_path: Path) -> None:
    src, remote, dst = tmp_path / "src", tmp_path / "remote", tmp_path / "dst"
    content = make_cache(src, files=FILES, size=2000)
    proc = _start("cache", "push", str(src), str(remote), "--workers", "1", "-q")
    wait_for(lambda: len(object_files(remote)) >= 50 or proc.poll() is not None, timeout=120, what="50 objects uploaded")
    _kill9(proc)
    uploaded = len(object_files(remote))
    assert 50 <= uploaded < FILES
    manifests = remote / "manifests"
    assert not manifests.exists() or not any(manifests.iterdir())  # nothing committed

    r = run_cli("cache", "push", str(src), str(remote), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["committed"] and rep["files_skipped"] >= uploaded and rep["files_transferred"] == FILES - rep["files_skipped"]

    r = run_cli("cache", "pull", str(remote), str(dst), "--max-size", "100MB")
    assert r.returncode == 0, r.stderr
    assert cache_content(dst) == content


def test_kill9_mid_pull_then_pull_again_resumes_and_verifies_clean(tmp_path: Path) -> None:
    src, remote, dst = tmp_path / "src", tmp_path / "remote", tmp_path / "dst"
    content = make_cache(src, files=FILES, size=2000)
    assert run_cli("cache", "push", str(src), str(remote)).returncode == 0
    proc = _start("cache", "pull", str(remote), str(dst), "--max-size", "100MB", "--workers", "1", "-q")
    wait_for(lambda: entry_count(dst) >= 50 or proc.poll() is not None, timeout=120, interval=0.1, what="50 entries pulled")
    _kill9(proc)
    stored = entry_count(dst)
    assert 50 <= stored < FILES

    r = run_cli("cache", "pull", str(remote), str(dst), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["files_skipped"] >= stored and rep["files_transferred"] == FILES - rep["files_skipped"]
    assert cache_content(dst) == content
    v = run_cli("verify", str(dst), "--no-source")
    assert v.returncode == 0, v.stdout + v.stderr


def test_kill9_mid_push_to_s3_then_resume(tmp_path: Path, s3_server, s3_url: str) -> None:
    src = tmp_path / "src"
    make_cache(src, files=600, size=1000)
    env = s3_server.env()
    bucket, _, prefix = s3_url[len("s3://"):].partition("/")
    client = s3_server.client()

    def uploaded() -> int:
        return int(client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/objects/").get("KeyCount", 0))

    proc = _start("cache", "push", str(src), s3_url, "--workers", "1", "-q", env=env)
    wait_for(lambda: uploaded() >= 30 or proc.poll() is not None, timeout=120, interval=0.1, what="30 objects uploaded")
    _kill9(proc)
    before = uploaded()
    assert client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/manifests/").get("KeyCount", 0) == 0
    r = run_cli("cache", "push", str(src), s3_url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["committed"] and rep["files_skipped"] >= before
