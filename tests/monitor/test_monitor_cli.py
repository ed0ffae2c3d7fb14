"""``cachewatch monitor`` on the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.helpers import run_cli
from .conftest import Trees
from .test_monitor import TREE


def _config(tmp_path: Path, memory_alert: str) -> Path:
    cfg = tmp_path / "cachewatch.toml"
    cfg.write_text(f'[monitor]\nmemory_alert = {memory_alert}\ndisk_alert = 1.0\n')
    return cfg


def test_json_reading_of_a_training_tree(trees: Trees, tmp_path: Path) -> None:
    root = trees.start(TREE)
    kids = set(map(int, trees.read_line(root, "children")))
    out = run_cli("--config", str(_config(tmp_path, "1.0")), "monitor", "--pid", str(root.pid),
                  "--path", str(tmp_path), "--interval", "0.2", "--json")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["tree"]["root_pid"] == root.pid
    assert set(snap["tree"]["worker_pids"]) == kids
    assert all(p["cpu_percent"] is not None for p in snap["tree"]["processes"])  # two samples were taken
    assert snap["host"]["disk"]["path"] == str(tmp_path)
    assert snap["gpu"]["state"] in ("ok", "no_library", "no_driver", "no_gpu", "error")


def test_text_reading_with_an_alert_exits_1(trees: Trees, tmp_path: Path) -> None:
    root = trees.start(TREE)
    trees.read_line(root, "children")
    out = run_cli("--config", str(_config(tmp_path, "0.0001")), "monitor", "--pid", str(root.pid),
                  "--path", str(tmp_path), "--interval", "0.1")
    assert out.returncode == 1, out.stderr
    assert f"training pid {root.pid}: 3 processes, 2 workers (cmdline)" in out.stdout
    assert "ALERT    system memory" in out.stdout
    assert out.stdout.splitlines()[0].startswith("GPU")


def test_missing_pid_is_a_one_line_error(tmp_path: Path) -> None:
    out = run_cli("monitor", "--pid", "999999999", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "cachewatch: --pid 999999999: no such process; give the training's pid (e.g. from `pgrep -f train.py`)"
    ]
