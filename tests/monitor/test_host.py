"""System memory, swap, CPU and the cache's disk, with their alert thresholds."""

from __future__ import annotations

import json
import time
import shutil
from pathlib import Path

import psutil
import pytest

from cachewatch.engine.monitor import ALERT_DISK, ALERT_MEMORY, HostSampler, HostSnapshot, MonitorError


def test_memory_figures_and_no_alert_at_the_top_threshold(tmp_path: Path) -> None:
    snap = HostSampler(tmp_path, memory_alert=1.0, disk_alert=1.0).sample()
    vm = psutil.virtual_memory()
    assert snap.memory.total_bytes == vm.total
    assert 0 < snap.memory.available_bytes <= snap.memory.total_bytes
    assert 0 <= snap.memory.used_bytes <= snap.memory.total_bytes
    assert 0 <= snap.memory.percent <= 100
    assert snap.memory.used_fraction == pytest.approx(snap.memory.percent / 100)
    assert snap.swap.total_bytes == psutil.swap_memory().total
    assert snap.alerts == ()
    assert snap.alert(ALERT_MEMORY) is None


def test_memory_alert_when_use_passes_the_threshold(tmp_path: Path) -> None:
    snap = HostSampler(tmp_path, memory_alert=0.0001).sample()
    alert = snap.alert(ALERT_MEMORY)
    assert alert is not None
    assert alert.threshold == 0.0001 and alert.used_fraction > 0.0001
    assert alert.message.startswith("system memory ") and "0.01%" in alert.message and "available" in alert.message
    assert HostSnapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap


def test_default_thresholds_come_from_the_seed() -> None:
    sampler = HostSampler()
    assert sampler.memory_alert == 0.85 and sampler.disk_alert == 0.95


def test_disk_figures_equal_shutil_disk_usage(tmpfs) -> None:
    # A private file system, so nothing else changes it between the two readings.
    tmp_path = tmpfs("8MiB")
    (tmp_path / "some-data").write_bytes(b"x" * 100_000)
    sampler = HostSampler(tmp_path)
    for _ in range(50):
        before = shutil.disk_usage(tmp_path)
        disk = sampler.sample().disk
        after = shutil.disk_usage(tmp_path)
        if before == after:
            break
    else:
        pytest.fail("the disk never held still for two consecutive readings")
    assert disk is not None
    assert (disk.total_bytes, disk.used_bytes, disk.free_bytes) == (after.total, after.used, after.free)
    assert disk.path == str(tmp_path) and disk.measured_path == str(tmp_path)
    assert disk.used_fraction == pytest.approx(after.used / (after.used + after.free))


def test_disk_alert_and_a_cache_root_not_created_yet(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet" / "cache"
    snap = HostSampler(root, disk_alert=0.0001).sample()
    assert snap.disk is not None and snap.disk.path == str(root) and snap.disk.measured_path == str(tmp_path)
    alert = snap.alert(ALERT_DISK)
    assert alert is not None and str(root) in alert.message and "free" in alert.message
    assert not root.exists()  # sampling never creates anything


def test_no_disk_path_is_a_state() -> None:
    snap = HostSampler(None).sample()
    assert snap.disk is None and snap.disk_reason == "no cache root configured"


def test_cpu_percent_needs_two_samples() -> None:
    sampler = HostSampler()
    assert sampler.sample().cpu_percent is None
    time.sleep(0.2)  # /proc/stat counts in ticks of 10 ms: let some pass
    second = sampler.sample()
    assert second.cpu_percent is not None and 0 <= second.cpu_percent <= 100
    assert second.cpu_count == psutil.cpu_count()


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.2, "high", None, True])
def test_bad_thresholds_name_the_value(bad) -> None:
    with pytest.raises(MonitorError, match=r"memory_alert = .* write a number in \(0, 1\]"):
        HostSampler(memory_alert=bad)
    with pytest.raises(MonitorError, match=r"disk_alert = "):
        HostSampler(disk_alert=bad)


def test_disk_alert_at_the_default_threshold_on_a_nearly_full_filesystem(tmpfs) -> None:
    fs = tmpfs("4MiB")
    sampler = HostSampler(fs / "cache")  # default disk_alert 0.95
    assert sampler.sample().alert(ALERT_DISK) is None
    (fs / "filler").write_bytes(b"\0" * (4 * 1024 * 1024 - 64 * 1024))
    snap = sampler.sample()
    usage = shutil.disk_usage(fs)
    assert (snap.disk.total_bytes, snap.disk.used_bytes, snap.disk.free_bytes) == (usage.total, usage.used, usage.free)
    alert = snap.alert(ALERT_DISK)
    assert alert is not None and alert.threshold == 0.95 and alert.used_fraction > 0.95
    assert alert.message.startswith(f"disk of '{fs / 'cache'}' ") and "KiB free" in alert.message
    (fs / "filler").unlink()
    assert sampler.sample().alert(ALERT_DISK) is None  # the alert clears with the condition
