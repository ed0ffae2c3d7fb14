"""The three samplers together, built from cachewatch.toml, as the daemon runs them."""

from __future__ import annotations

import json
from pathlib import Path

from cachewatch.engine import load_config
from cachewatch.engine.monitor import Monitor, MonitorSnapshot, NvmlBoundary

from tests.support.helpers import wait_for
from .conftest import Trees, two_gpu_fake
from .fake_nvml import MiB

TREE = """
import multiprocessing as mp, os, sys, time
def work():
    time.sleep(300)
if __name__ == "__main__":
    kids = [mp.get_context("fork").Process(target=work) for _ in range(2)]
    for k in kids:
        k.start()
    print("children", *[k.pid for k in kids], flush=True)
    sys.stdin.read()
"""


def test_from_config_uses_the_monitor_section(tmp_path: Path) -> None:
    (tmp_path / "cachewatch.toml").write_text(
        '[cache]\nroot = "data/cache"\nmax_size = "1GB"\n'
        '[monitor]\ninterval = "2s"\nmemory_alert = 0.5\ndisk_alert = "90%"\ngpu = false\n'
    )
    cfg = load_config(tmp_path / "cachewatch.toml")
    m = Monitor.from_config(cfg)
    assert m.host.interval_s == m.tree.interval_s == m.gpu.interval_s == 2.0
    assert (m.host.memory_alert, m.host.disk_alert) == (0.5, 0.9)
    assert m.host.disk_path == str(tmp_path / "data" / "cache")
    snap = m.sample()
    assert snap.gpu.state == "disabled"
    assert snap.host.disk.measured_path == str(tmp_path)
    m.stop()


def test_running_monitor_attributes_gpu_memory_to_the_tree(trees: Trees, tmp_path: Path) -> None:
    root = trees.start(TREE)
    kids = list(map(int, trees.read_line(root, "children")))
    fake = two_gpu_fake(training_pid=kids[1], training_bytes=700 * MiB)
    monitor = Monitor(disk_path=tmp_path, root_pid=root.pid, interval_s=0.05, nvml=NvmlBoundary(load=lambda: fake))
    with monitor:
        snap = wait_for(
            lambda: (lambda s: s if s.gpu and s.tree and s.host and s.gpu.training_gpu_memory_bytes == 700 * MiB else None)(
                monitor.snapshot()
            ),
            what="a snapshot with the training's GPU memory",
        )
    assert snap.tree.worker_count == 2 and set(snap.tree.worker_pids) == set(kids)
    assert snap.host.disk is not None
    assert MonitorSnapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap
    assert fake.initialized == 0  # NVML shut down with the monitor
    assert not (monitor.gpu.running or monitor.host.running or monitor.tree.running)


def test_snapshot_before_any_sample_is_empty() -> None:
    m = Monitor()
    snap = m.snapshot()
    assert snap == MonitorSnapshot(None, None, None)
    assert MonitorSnapshot.from_json(snap.to_json()) == snap
    m.stop()


def test_set_root_pid_follows_a_restart(trees: Trees) -> None:
    a = trees.start(TREE)
    trees.read_line(a, "children")
    b = trees.start(TREE)
    kids_b = set(map(int, trees.read_line(b, "children")))
    m = Monitor(root_pid=a.pid, gpu=False)
    assert m.sample().tree.root_pid == a.pid
    m.set_root_pid(b.pid)
    tree = m.sample().tree
    assert tree.root_pid == b.pid and set(tree.worker_pids) == kids_b
    m.stop()
