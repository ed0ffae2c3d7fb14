"""build: through the managed cache, resumable, failures counted, and a kill -9 resumed equals a clean build."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cachewatch.engine import Cache, load_config
from cachewatch.engine.daemon.jobrunner import JobRunner
from cachewatch.engine.daemon.snapshot import JobView
from cachewatch.engine.jobs import BuildJob, JobContext, SourceSpec, verify_cache

from tests.support.helpers import REPO, run_cli, wait_for
from .conftest import entries_by_key, make_source, write_config


def live_count(root: Path) -> int:
    db = root / ".cachewatch" / "index.sqlite"
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute("SELECT COUNT(*) FROM entries WHERE state = 0").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_build_makes_every_entry_counts_and_logs_failures(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 10, bad=2)
    write_config(tmp_path)
    out = run_cli("build", "--workers", "2", "--json", cwd=tmp_path)
    assert out.returncode == 1, out.stderr  # two items failed
    report = json.loads(out.stdout)
    assert report["built"] == 10 and report["failed"] == 2 and report["source_items"] == 12
    assert sorted(Path(f["path"]).name for f in report["failures"]) == ["bad0.edf", "bad1.edf"]
    assert all("ValueError: cannot parse" in f["error"] for f in report["failures"])
    # each failure is in the cache's event log too
    events = [json.loads(line) for line in (tmp_path / "cache" / ".cachewatch" / "events.jsonl").read_text().splitlines()]
    failed = sorted(e["key"] for e in events if e["kind"] == "build.item_failed")
    assert failed == ["b/bad0.edf.bin", "b/bad1.edf.bin"]
    # the transform's output is what is stored
    src = tmp_path / "src" / "a" / "rec001.edf"
    import hashlib

    with Cache(tmp_path / "cache", sweep=False) as c:
        assert c.read("a/rec001.edf.bin") == hashlib.sha256(src.read_bytes()).digest() + src.read_bytes()[::-1]


def test_build_resumes_and_skips_what_is_cached(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 8)
    write_config(tmp_path)
    first = run_cli("build", "--workers", "2", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with Cache(tmp_path / "cache", sweep=False) as c:
        c.delete("b/rec004.edf.bin")
    second = json.loads(run_cli("build", "--json", cwd=tmp_path).stdout)
    assert second["already_cached"] == 7 and second["built"] == 1 and second["ok"] is True


def test_kill_9_mid_build_then_resume_gives_the_same_cache(tmp_path: Path, transform_dir: Path) -> None:
    interrupted, clean = tmp_path / "i", tmp_path / "c"
    for d in (interrupted, clean):
        d.mkdir()
        write_config(d)
    src = make_source(interrupted, 40, sizes=20000)
    os.symlink(src, clean / "src")
    env = {"TEST_TRANSFORM_DELAY": "0.05"}

    proc = subprocess.Popen(
        [sys.executable, "-m", "cachewatch.tui.cli", "build", "--workers", "2", "-q"],
        cwd=interrupted, env={**os.environ, **env}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: live_count(interrupted / "cache") >= 6, timeout=60, what="some entries built")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the build and its workers, mid-item
        proc.wait()
    partial = live_count(interrupted / "cache")
    assert 6 <= partial < 40

    resumed = run_cli("build", "--workers", "2", "--json", cwd=interrupted, env=env)
    assert resumed.returncode == 0, resumed.stderr
    r = json.loads(resumed.stdout)
    assert r["already_cached"] >= partial - 2 and r["built"] == 40 - r["already_cached"]
    full = run_cli("build", "--workers", "2", "-q", cwd=clean)
    assert full.returncode == 0, full.stderr

    assert entries_by_key(interrupted / "cache") == entries_by_key(clean / "cache")
    assert len(entries_by_key(clean / "cache")) == 40
    for d in (interrupted, clean):
        report = verify_cache(d / "cache", source=SourceSpec.from_config(load_config(d / "cachewatch.toml")))
        assert report.ok and report.complete, report.summary()
        with Cache(d / "cache", sweep=False) as c:
            s = c.stats()
        assert s.writers == 0 and s.reserved_bytes == 0


def test_the_size_bound_holds_when_the_source_is_bigger_than_the_cache(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 30, sizes=10000)
    write_config(tmp_path, max_size="120KB")
    out = run_cli("build", "--workers", "2", "--json", cwd=tmp_path)
    assert out.returncode == 1
    r = json.loads(out.stdout)
    assert r["evicted_during_build"] > 0 and r["complete_items"] < 30 and r["failed"] == 0
    assert "too small" in out.stderr or "evicted" in out.stderr
    with Cache(tmp_path / "cache", sweep=False) as c:
        s = c.stats()
    assert s.used_bytes <= s.max_bytes


def test_a_transform_that_returns_the_wrong_type_fails_each_item_with_the_fix(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 3)
    write_config(tmp_path, transform="jobs_test_prep:wrong_type")
    r = json.loads(run_cli("build", "--json", "-q", cwd=tmp_path).stdout)
    assert r["failed"] == 3
    assert "transform returned int; return bytes" in r["failures"][0]["error"]


def test_a_transform_that_cannot_be_imported_is_an_error_before_anything_runs(tmp_path: Path) -> None:
    make_source(tmp_path, 3)
    write_config(tmp_path, transform="no_such_module_xyz:process")
    out = run_cli("build", cwd=tmp_path)
    assert out.returncode == 2
    assert "no_such_module_xyz" in out.stderr and out.stderr.startswith("cachewatch: ")
    assert not (tmp_path / "cache" / "a").exists()


def test_a_worker_that_dies_fails_its_item_and_the_build_goes_on(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 6)
    (tmp_path / "src" / "a" / "crash_me.edf").write_bytes(b"boom")
    write_config(tmp_path)
    r = json.loads(run_cli("build", "--workers", "2", "--json", "-q", cwd=tmp_path).stdout)
    assert r["built"] == 6 and r["failed"] == 1
    assert r["failures"][0]["path"].endswith("crash_me.edf") and "worker process died" in r["failures"][0]["error"]
    assert verify_cache(tmp_path / "cache").ok


def test_cancelling_a_build_leaves_a_consistent_cache_that_resumes(tmp_path: Path, transform_dir: Path) -> None:
    (transform_dir / "delay.txt").write_text("0.2")  # 40 items x 0.2 s over 2 workers: seconds of build to cancel
    make_source(tmp_path, 40)
    cfg = load_config(write_config(tmp_path))
    job = BuildJob.from_config(cfg, workers=2)

    def on_change(kind: str, view: JobView) -> None:
        if view.state == "running" and view.phase == "build" and view.done >= 1:
            runner.cancel(view.id)

    runner = JobRunner(on_change)
    final = runner.wait(runner.start_job(job).id, 120)
    assert final.state == "cancelled"
    assert final.result["cancelled"] is True and final.result["built"] < 40
    check = verify_cache(tmp_path / "cache")
    assert check.ok, check.summary()  # no stale reservation, no .part, counters agree
    (transform_dir / "delay.txt").unlink()
    report = BuildJob.from_config(cfg, workers=2).run(JobContext("b", "build"))
    assert report.ok and report.complete_items == 40
