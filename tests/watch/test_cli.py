"""``cachewatch watch``: the real command line in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.helpers import REPO, run_cli, wait_for
from .conftest import tree_bytes, write


def test_once_evicts_down_to_target_and_reports_json(root: Path, state: Path) -> None:
    for i in range(20):
        write(root / "s" / f"f{i:02d}", 100_000)
    r = run_cli("watch", str(root), "--max", "1MB", "--target", "50%", "--min-age", "0", "--once", "--json",
                "--state-dir", str(state), "--scan-workers", "0")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["scan"]["files"] == 20
    assert out["eviction"]["files"] == 15 and out["eviction"]["reason"] == "max" and not out["eviction"]["dry_run"]
    assert out["stats"]["size_bytes"] == 500_000 == tree_bytes(root)[0]
    assert out["stats"]["target_bytes"] == 500_000 and out["stats"]["kind"] == "watch"


def test_once_dry_run_touches_nothing(root: Path, state: Path) -> None:
    for i in range(20):
        write(root / f"f{i:02d}", 100_000)
    r = run_cli("watch", str(root), "--max", "1MB", "--min-age", "0", "--once", "--dry-run", "--state-dir", str(state),
                "--scan-workers", "0")
    assert r.returncode == 0, r.stderr
    assert "Would evict 11 files (1.1 MB)" in r.stdout
    assert tree_bytes(root) == (2_000_000, 20)


def test_config_watch_entries_are_used(root: Path, state: Path, tmp_path: Path) -> None:
    for i in range(5):
        write(root / f"f{i}.jpg", 1000)
    write(root / "keep.txt", 50_000)
    (tmp_path / "cachewatch.toml").write_text(
        f"[[watch]]\nroot = '{root}'\nmax_size = '3KB'\ninclude = '*.jpg'\nmin_age = 0\nstate_dir = '{state}'\n"
    )
    r = run_cli("watch", "--once", "--json", "--scan-workers", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["stats"]["max_bytes"] == 3000 and out["stats"]["entries"] == 2
    assert (root / "keep.txt").exists()  # not counted, never evicted
    # flags override the config entry for the same root
    r = run_cli("watch", str(root), "--max", "1.5KB", "--once", "--json", "--scan-workers", "0", cwd=tmp_path)
    assert json.loads(r.stdout)["stats"]["entries"] == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["--once"], "needs a limit: pass --max"),
        (["--max", "12 parsecs", "--once"], "--max = '12 parsecs'"),
        (["--max", "1MB", "--target", "2.5x", "--once"], "--target"),
        (["--max", "1MB", "--include", "[bad", "--once"], "'[bad'"),
        (["--max", "1MB", "--interval", "0s"], "--interval"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(root: Path, state: Path, args: list[str], words: str) -> None:
    r = run_cli("watch", str(root), *args, "--state-dir", str(state))
    assert r.returncode == 2
    assert r.stderr.startswith("cachewatch: ") and words in r.stderr and r.stderr.count("\n") == 1


def test_nothing_to_watch_and_missing_root(tmp_path: Path) -> None:
    r = run_cli("watch", cwd=tmp_path)
    assert r.returncode == 2 and "nothing to watch" in r.stderr
    r = run_cli("watch", str(tmp_path / "nope"), "--max", "1GB", cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
    write(tmp_path / "afile", 1)
    r = run_cli("watch", str(tmp_path / "afile"), "--max", "1GB", cwd=tmp_path)
    assert r.returncode == 2 and "not a directory" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_foreground_run_evicts_live_and_stops_cleanly(root: Path, state: Path, sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachewatch.tui.cli", "watch", str(root), "--max", "100KB", "--min-age", "0",
         "--interval", "0.5s", "--state-dir", str(state), "--scan-workers", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    out: list[str] = []
    t = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    t.start()
    try:
        wait_for(lambda: any("watching" in line for line in out), timeout=60, what="start line")
        for i in range(30):
            write(root / f"img{i:02d}.jpg", 10_000)
        wait_for(lambda: any("Evicted" in line for line in out), timeout=30, what="an eviction line")
        wait_for(lambda: tree_bytes(root)[0] <= 100_000, timeout=30, what="size under max")
    finally:
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
        t.join(timeout=5)
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    assert "stopped watching" in out[-1]
    ev = [json.loads(x)["kind"] for x in (state / "events.jsonl").read_text().splitlines()]
    assert ev[0] == "watch.started" and "eviction" in ev and ev[-1] == "watch.stopped"


def test_a_system_directory_is_refused_in_one_line_with_the_way_out(state: Path) -> None:
    r = run_cli("watch", "/usr", "--max", "1GB", "--once", "--dry-run", "--state-dir", str(state))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "'/usr' is a system directory" in r.stderr
    assert "--allow-dangerous-root" in r.stderr and r.stdout == ""


def test_a_home_ancestor_is_refused_on_the_command_line_and_in_config_unless_allowed(tmp_path: Path, state: Path) -> None:
    people = tmp_path / "people"
    home = people / "alice"
    home.mkdir(parents=True)
    write(home / "notes.txt", 5000, age_s=3600)
    env = {"HOME": str(home)}
    base = ["--max", "1KB", "--min-age", "0", "--once", "--json", "--scan-workers", "0", "--state-dir", str(state)]
    r = run_cli("watch", str(people), *base, env=env)
    assert r.returncode == 2 and "holds your home directory" in r.stderr and r.stderr.count("\n") == 1
    assert (home / "notes.txt").exists()
    r = run_cli("watch", str(people), *base, "--dry-run", "--allow-dangerous-root", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stats"]["would_evict_files"] == 1 and (home / "notes.txt").exists()
    # the same rule for [[watch]] entries, and the same way out
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    entry = f"[[watch]]\nroot = '{people}'\nmax_size = '1KB'\nmin_age = 0\ndry_run = true\nstate_dir = '{state}'\n"
    (cfg / "cachewatch.toml").write_text(entry)
    r = run_cli("watch", "--once", "--json", "--scan-workers", "0", cwd=cfg, env=env)
    assert r.returncode == 2 and "holds your home directory" in r.stderr and "allow_dangerous_root" in r.stderr
    (cfg / "cachewatch.toml").write_text(entry + "allow_dangerous_root = true\n")
    r = run_cli("watch", "--once", "--json", "--scan-workers", "0", cwd=cfg, env=env)
    assert r.returncode == 0, r.stderr
    assert (home / "notes.txt").exists()


def _without_root_privileges() -> list[str]:
    """A command prefix under which permission bits apply: root keeps its uid but loses the
    capabilities that bypass them (the kernel's own check, as for a second user)."""
    import os

    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_unreadable_subdirectory_is_reported_not_silently_counted_as_empty(root: Path, state: Path,
                                                                              workers: str) -> None:
    for i in range(4):
        write(root / "open" / f"f{i}", 1000)
    for i in range(3):
        write(root / "secret" / f"s{i}", 10_000)
    (root / "secret").chmod(0)
    try:
        r = subprocess.run(
            [*_without_root_privileges(), sys.executable, "-m", "cachewatch.tui.cli", "watch", str(root), "--max", "1GB",
             "--once", "--json", "--scan-workers", workers, "--state-dir", str(state)],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )
    finally:
        (root / "secret").chmod(0o755)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)["stats"]
    assert stats["unreadable_paths"] == [str(root / "secret")]
    assert stats["size_bytes"] == 4000  # what could be read; the status says what could not
    warnings = [line for line in r.stderr.splitlines() if "cannot read" in line]
    assert len(warnings) == 1 and str(root / "secret") in warnings[0], r.stderr
    events = [json.loads(x) for x in (state / "events.jsonl").read_text().splitlines()]
    assert [e["paths"] for e in events if e["kind"] == "watch.unreadable"] == [[str(root / "secret")]]


def test_a_running_watch_warns_once_and_keeps_the_unreadable_directory_in_its_status(root: Path, state: Path) -> None:
    write(root / "open" / "f", 1000)
    write(root / "secret" / "s", 10_000)
    (root / "secret").chmod(0)
    proc = subprocess.Popen(
        [*_without_root_privileges(), sys.executable, "-m", "cachewatch.tui.cli", "watch", str(root), "--max", "1GB",
         "--interval", "0.2s", "--scan-interval", "0.2s", "--scan-workers", "0", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    out: list[str] = []
    t = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    t.start()
    try:
        wait_for(lambda: sum("unreadable director" in line for line in out) >= 3, timeout=60, what="status lines")
        wait_for(lambda: sum(json.loads(x)["kind"] == "watch.scan"
                             for x in (state / "events.jsonl").read_text().splitlines()) >= 2, timeout=60,
                 what="two rescans")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        t.join(timeout=5)
        (root / "secret").chmod(0o755)
    err = proc.stderr.read() if proc.stderr else ""
    assert err.count("cannot read") == 1, err
    assert any(f"1 unreadable directory not counted: {root / 'secret'}" in line for line in out)
