"""Seed 004: a cache built on demand during training is detected, with figures and the fix."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachewatch.engine.cache import Cache
from cachewatch.engine.training import ProgressFeed
from cachewatch.engine.training.ondemand import (
    CacheCounterSample,
    OnDemandBuildDetector,
    judge_on_demand_build,
    sample_from,
)

SCRIPT = Path(__file__).resolve().parent / "trainers" / "ondemand_train.py"


def run_through_cache(root: Path, *args: str, detector: OnDemandBuildDetector) -> list:
    """Run the real training script on the real cache; sample its counters and progress every 0.1 s."""
    if importlib.util.find_spec("tqdm") is None:
        pytest.skip("tqdm is not installed; pip install -e '.[trainers]'")
    feed = ProgressFeed(started_time=time.time())
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(root), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
    watcher = Cache(root)
    found = []
    try:
        while True:
            chunk = proc.stdout.read()  # type: ignore[union-attr]
            now = time.time()
            if chunk:
                feed.feed_output(chunk, now)
            stats = watcher.stats()
            f = detector.observe(sample_from(now, stats.hits, stats.misses, feed.snapshot(now)))
            if f is not None:
                found.append(f)
            if proc.poll() is not None and not chunk:
                break
            time.sleep(0.1)
    finally:
        watcher.close()
    assert proc.returncode == 0
    return found


def prebuild(root: Path, items: range) -> None:
    c = Cache(root, max_size="10MB")
    for i in items:
        c.put(f"item/{i}", b"x" * 256)
    c.close()


def test_misses_after_the_first_epoch_raise_the_alert_with_figures_and_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    prebuild(root, range(0, 20))  # half the data set built, the seed's 246/3734
    det = OnDemandBuildDetector(window_s=2.5, min_misses=5)  # about three epochs of this script
    found = run_through_cache(root, "--epochs", "6", "--items", "40", "--compute", "0.03", "--no-store", detector=det)
    assert found, "misses kept coming every epoch and no alert was raised"
    later = [f for f in found if f.after_first_epoch]
    assert later, "no finding once the training was past its first epoch"
    f = later[-1]
    assert f.epoch is not None and f.epoch >= 2
    assert f.misses_per_min > 60  # ~20 misses an epoch of under a second
    assert 0.2 < f.miss_share < 0.8  # half the reads miss
    # Misses cost 0.03 s on top of 0.005 s a step: the fit finds a step without misses far cheaper.
    assert f.slowdown is not None and f.slowdown > 1.5
    assert f.step_s_without_misses is not None and f.step_s_without_misses < f.step_s  # type: ignore[operator]
    assert any("cachewatch build" in r for r in f.remedies)
    assert any('preflight = "require"' in r for r in f.remedies)
    assert "misses a minute" in f.text and "slower" in f.text
    assert f.figures["misses_per_min"] == round(f.misses_per_min, 1)


def test_a_built_cache_raises_nothing(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    prebuild(root, range(0, 40))
    det = OnDemandBuildDetector(window_s=1.0, min_misses=5)
    assert run_through_cache(root, "--epochs", "3", "--items", "40", "--no-store", detector=det) == []


def test_the_rule_on_figures() -> None:
    def samples(miss_per_s: float, hit_per_s: float, epoch_at, n: int = 13):
        return [CacheCounterSample(10.0 * i, int(hit_per_s * 10 * i), int(miss_per_s * 10 * i), epoch_at(i), 50 * i)
                for i in range(n)]

    # A cold start: misses only in the first epoch, and only for 30 s: nothing.
    cold = [CacheCounterSample(10.0 * i, 100 * i, 30 * min(i, 3), 1 if i < 4 else 2, 50 * i) for i in range(13)]
    assert judge_on_demand_build(cold, window_s=60) is None
    # Past epoch 1, 0.5 misses a second keep coming: raised, even at a low share of reads.
    f = judge_on_demand_build(samples(0.5, 20, lambda i: 2), window_s=60)
    assert f is not None and f.after_first_epoch and f.misses_per_min == pytest.approx(30)
    # In epoch 1 a low share of misses is a cache being filled, not a problem...
    assert judge_on_demand_build(samples(0.5, 20, lambda i: 1), window_s=60) is None
    # ...a high one held for the whole window is.
    f = judge_on_demand_build(samples(5, 5, lambda i: 1), window_s=60)
    assert f is not None and not f.after_first_epoch and f.miss_share == pytest.approx(0.5)
    # Every window missed alike: the slowdown is unknown, and the text says so.
    assert f.slowdown is None and "not measurable" in f.text
    # Counters that went backwards (a new index) start the window again.
    reset = samples(5, 5, lambda i: 2)[:6] + [CacheCounterSample(60.0 + 10 * i, 0, 0, 2, 300) for i in range(1, 4)]
    assert judge_on_demand_build(reset, window_s=60) is None


def test_slowdown_is_fitted_from_windows_with_different_miss_shares() -> None:
    # 0.1 s a step without misses, 1 s per miss; windows alternate 0 and 0.5 misses a step.
    t, m, s, out = 0.0, 0, 0, [CacheCounterSample(0.0, 0, 0, 2, 0)]
    for i in range(12):
        per_step = 0.5 if i % 2 else 0.0
        t += 10 * (0.1 + per_step * 1.0)
        m += int(10 * per_step)
        s += 10
        out.append(CacheCounterSample(t, 10 * i, m, 2, s))
    f = judge_on_demand_build(out, window_s=30, min_misses=5)
    assert f is not None and f.step_s_without_misses == pytest.approx(0.1, rel=0.01)
    assert f.figures["seconds_per_miss"] == pytest.approx(1.0, rel=0.01)
    assert f.slowdown == pytest.approx(f.step_s / 0.1, rel=0.01)  # type: ignore[operator]


def test_the_engine_raises_the_alert_for_a_real_training_on_its_cache(tmp_path: Path) -> None:
    """The wiring: a headless Engine supervising the real script on its managed cache."""
    if importlib.util.find_spec("tqdm") is None:
        pytest.skip("tqdm is not installed; pip install -e '.[trainers]'")
    from cachewatch.engine import load_config
    from cachewatch.engine.daemon import Engine
    from cachewatch.engine.daemon.parts import EngineParts
    from cachewatch.engine.training.ondemand import OnDemandBuildDetector

    root = tmp_path / "cache"
    prebuild(root, range(0, 20))
    cfg = tmp_path / "cachewatch.toml"
    cfg.write_text(f'[cache]\nroot = "{root}"\nmax_size = "10MB"\n[monitor]\ninterval = 0.2\n')
    parts = EngineParts(new_feed=lambda path, started: ProgressFeed(path, started_time=started))
    command = (sys.executable, str(SCRIPT), str(root), "--epochs", "6", "--items", "40", "--no-store")
    engine = Engine(load_config(cfg), name="ondemand", command=command, state_dir=tmp_path / "state", parts=parts)
    engine._on_demand = OnDemandBuildDetector(window_s=1.0, min_misses=5)  # seconds here, minutes in use
    engine.start()
    try:
        deadline = time.monotonic() + 60
        alert = None
        while time.monotonic() < deadline and alert is None:
            alert = next((a for a in engine.snapshot().alerts if a.kind == "cache_on_demand_build"), None)
            time.sleep(0.2)
        assert alert is not None, "no on-demand build alert from the engine"
        assert alert.severity == "warning" and "misses a minute" in alert.text
        assert alert.figures["misses_per_min"] > 0
        assert any("cachewatch build" in r for r in alert.remedies)
    finally:
        engine.close()
