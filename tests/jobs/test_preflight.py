"""Pre-flight before training: off, warn, require (refuse with the fix) and build (then go)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cachewatch.engine import Cache, ConfigError, load_config
from cachewatch.engine.jobs import PreflightRefused, run_preflight

from tests.support.helpers import run_cli
from .conftest import make_source, write_config


def test_off_checks_nothing(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, preflight="off"))  # no source dir exists: would fail if it looked
    r = run_preflight(cfg)
    assert r.ok and not r.checked


def test_require_refuses_an_incomplete_cache_naming_the_path_and_the_fix(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 5)
    cfg = load_config(write_config(tmp_path, preflight="require"))
    r = run_preflight(cfg)
    assert not r.ok and r.checked
    root = str((tmp_path / "cache").resolve())
    assert root in r.message and "does not exist yet" in r.message and "0 of 5" in r.message
    assert "cachewatch build" in r.message and str(cfg.path) in r.message
    with pytest.raises(PreflightRefused) as exc:
        r.raise_if_refused()
    assert exc.value.exit_code == 1

    # partly built: the count says how much is missing
    with Cache(tmp_path / "cache", max_size="10MB", sweep=False) as c:
        c.put("a/rec001.edf.bin", b"x")
    r = run_preflight(cfg)
    assert not r.ok and "is incomplete: 1 of 5" in r.message and r.completeness.missing_count == 4


def test_warn_lets_the_training_start_and_says_why(tmp_path: Path) -> None:
    make_source(tmp_path, 3)
    cfg = load_config(write_config(tmp_path, preflight="warn"))
    r = run_preflight(cfg)
    assert r.ok and r.checked and r.warnings == (r.message,) and "0 of 3" in r.message


def test_build_mode_builds_what_is_missing_then_lets_the_training_start(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 6)
    cfg = load_config(write_config(tmp_path, preflight="build"))
    r = run_preflight(cfg, workers=2)
    assert r.ok and r.build is not None and r.build["built"] == 6
    assert r.completeness.complete
    again = run_preflight(cfg)
    assert again.ok and again.build is None  # complete now: nothing to build


def test_build_mode_refuses_when_items_still_fail(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 4, bad=1)
    cfg = load_config(write_config(tmp_path, preflight="build"))
    r = run_preflight(cfg, workers=2)
    assert not r.ok
    assert "still incomplete" in r.message and "bad0.edf" in r.message


def test_a_file_truncated_in_the_cache_counts_as_missing(tmp_path: Path) -> None:
    make_source(tmp_path, 2)
    cfg = load_config(write_config(tmp_path, preflight="require", transform=None))
    with Cache(tmp_path / "cache", max_size="10MB", sweep=False) as c:
        for p in sorted((tmp_path / "src").rglob("*.edf")):
            path = c.put_file(p.relative_to(tmp_path / "src").as_posix() + ".bin", p)
    assert run_preflight(cfg).ok
    path.write_bytes(b"short")
    assert not run_preflight(cfg).ok


def test_needs_a_source_to_check_against(tmp_path: Path) -> None:
    (tmp_path / "cachewatch.toml").write_text('[cache]\nroot = "cache"\nmax_size = "1GB"\n[run]\npreflight = "require"\n')
    with pytest.raises(ConfigError, match=r"needs the source data"):
        run_preflight(load_config(tmp_path / "cachewatch.toml"))


def test_cli_preflight_check(tmp_path: Path) -> None:
    make_source(tmp_path, 2)
    write_config(tmp_path, preflight="require")
    out = run_cli("verify", "--preflight", "--json", cwd=tmp_path)
    assert out.returncode == 1
    assert json.loads(out.stdout)["ok"] is False
