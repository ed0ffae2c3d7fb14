"""`cachewatch cache ...` through the real command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cachewatch.engine import Cache

from tests.support.helpers import run_cli

KiB = 1024


def _filled(root: Path) -> None:
    with Cache(root, max_size=64 * KiB) as cache:
        for i in range(30):
            cache.put(f"img/{i}.jpg", os.urandom(4000))
        cache.get("img/29.jpg")
        cache.get("missing")


def test_stats_json_and_text(cache_root: Path) -> None:
    _filled(cache_root)
    r = run_cli("cache", "stats", str(cache_root), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["max_bytes"] == 64 * KiB and s["entries"] == len(list(Cache(cache_root).entries()))
    assert s["evicted_files"] > 0 and s["hits"] == 1 and s["misses"] == 1
    assert s["used_bytes"] <= s["max_bytes"]
    r = run_cli("cache", "stats", str(cache_root))
    assert r.returncode == 0 and "of 65.5 KB max" in r.stdout and "hit rate 50.0 %" in r.stdout


def test_ls_log_evict(cache_root: Path) -> None:
    _filled(cache_root)
    ls = json.loads(run_cli("cache", "ls", str(cache_root), "--json").stdout)
    assert ls[-1]["key"] == "img/29.jpg"  # most recently used last
    assert all(Path(e["path"]).is_file() for e in ls)
    assert len(json.loads(run_cli("cache", "ls", str(cache_root), "--json", "--limit", "3").stdout)) == 3
    log = json.loads(run_cli("cache", "log", str(cache_root), "--json").stdout)
    assert log and log[0]["reason"] == "target" and log[0]["time"] >= log[-1]["time"]
    text = run_cli("cache", "log", str(cache_root)).stdout
    assert "Evicted" in text
    dry = run_cli("cache", "evict", str(cache_root), "--to", "8KiB", "--dry-run", "--json")
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["files"] > 0
    assert len(json.loads(run_cli("cache", "ls", str(cache_root), "--json").stdout)) == len(ls)
    real = run_cli("cache", "evict", str(cache_root), "--to", "8KiB")
    assert real.returncode == 0 and real.stdout.startswith("Evicted")
    assert json.loads(run_cli("cache", "stats", str(cache_root), "--json").stdout)["size_bytes"] <= 8 * KiB


def test_root_from_config(cache_root: Path, tmp_path: Path) -> None:
    _filled(cache_root)
    (tmp_path / "cachewatch.toml").write_text(f'[cache]\nroot = "{cache_root.name}"\nmax_size = "64KiB"\n')
    r = run_cli("cache", "stats", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["root"] == str(cache_root)


def test_errors_are_one_line_with_exit_2(tmp_path: Path, cache_root: Path) -> None:
    cases = [
        (["cache", "stats", str(tmp_path / "nope")], "is not a cachewatch cache"),
        (["cache", "stats"], "no cache given"),
        (["cache", "evict", str(tmp_path), "--to", "1XB"], "not a cachewatch cache"),
        (["cache", "frobnicate"], "invalid choice"),
    ]
    _filled(cache_root)
    cases.append((["cache", "evict", str(cache_root), "--to", "1XB"], "unknown unit 'XB'"))
    (tmp_path / "file").write_text("x")
    cases.append((["cache", "stats", str(tmp_path / "file")], "is a file, not a directory"))
    for args, fragment in cases:
        r = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert fragment in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("cachewatch: ")
