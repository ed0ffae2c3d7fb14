"""An engine supervising a Redis-indexed cache: build, the dashboard's figures, the evict
command and evictions made by other nodes, as with a SQLite-indexed one. Real engine, real
redis-server, real processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cachewatch.engine import Cache
from cachewatch.engine.daemon import EngineClient
from tests.fleet.redis_server import REDIS_MISSING, RedisServer
from tests.support.engine import EngineEnv, run_cli, wait_for

from .test_engine_daemon import TICKER, _config, _events


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    return redis_server


def test_build_dashboard_figures_and_evict_on_a_redis_indexed_cache(engine_env: EngineEnv, redis: RedisServer) -> None:
    root = engine_env.tmp / "shared"
    src = engine_env.tmp / "src"
    src.mkdir()
    for i in range(20):
        (src / f"item{i:02d}.bin").write_bytes(os.urandom(30_000))
    cfg = _config(engine_env, f"[cache]\nroot = '{root}'\nmax_size = '2MB'\nindex = '{redis.url}'\nnode = 'alpha'\n"
                              f"[source]\ndir = '{src}'\n")
    out = run_cli("--config", str(cfg), "build", "--json", "-q")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["complete_items"] == 20
    with Cache(root) as c:
        assert c.stats().entries == 20 and c.stats().nodes == ("alpha",)

    entry = engine_env.start(*TICKER, name="shared", args=("--config", str(cfg)))
    with EngineClient(entry.socket) as client:
        wait_for(lambda: client.snapshot().caches and client.snapshot().caches[0].stats is not None, what="cache figures")
        s = client.snapshot().caches[0].stats
        assert s.index == redis.url and s.entries == 20 and s.nodes == ("alpha",)
        result = client.command("evict", to="300KB")
        assert result.files > 0 and result.size_after <= 300_000
        wait_for(lambda: client.snapshot().caches[0].stats.entries == 20 - result.files, what="fresh figures")
        # Another node's worker evicts: the engine sees it (the shared root's events file).
        with Cache(root, node="beta") as other:
            other.put("from-beta", b"b" * 10)
            outside = other.evict(to=0)
        assert outside.files > 0
        wait_for(lambda: len(_events(entry, ["eviction"])) == 2, what="the other node's eviction")
        wait_for(lambda: client.snapshot().caches[0].stats.nodes == ("alpha", "beta"), what="both nodes listed")
    assert run_cli("stop", "shared", "--yes").returncode == 0


def test_engine_starts_while_the_caches_redis_is_away_and_shows_it(engine_env: EngineEnv, tmp_path: Path) -> None:
    try:
        redis = RedisServer(tmp_path / "redis-aof", extra=("--appendonly", "yes", "--appendfsync", "always"))
    except RuntimeError:
        pytest.fail(REDIS_MISSING)
    redis.start()
    root = engine_env.tmp / "shared"
    try:
        with Cache(root, max_size="2MB", index=redis.url, node="alpha") as c:
            c.put("k", b"v")
        redis.stop()
        cfg = _config(engine_env, f"[cache]\nroot = '{root}'\nindex = '{redis.url}'\n")
        entry = engine_env.start(*TICKER, name="away", args=("--config", str(cfg)))
        with EngineClient(entry.socket) as client:
            snap = client.snapshot()
            assert snap.training.state.value == "running"  # the training was not held back
            err = snap.caches[0].error or ""
            assert "unreachable" in err and redis.url in err
            redis.start()
            wait_for(lambda: client.snapshot().caches[0].stats is not None, timeout=20, what="figures once Redis is back")
            assert client.snapshot().caches[0].stats.entries == 1
        assert run_cli("stop", "away", "--yes").returncode == 0
    finally:
        redis.stop()


def test_quarantined_bytes_reach_the_snapshot_and_the_metrics(engine_env: EngineEnv, redis: RedisServer) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    root = engine_env.tmp / "shared"
    stalled = Cache(root, max_size="2MB", index=redis.url, node="beta", lease_s=0.2)
    stalled._reserve("k", 8192, "aa/k")  # a writer that then stops renewing (as a SIGSTOPped one)
    with stalled._lock:
        stalled._leases.clear()
    cfg = _config(engine_env, f"[cache]\nroot = '{root}'\nindex = '{redis.url}'\n")
    entry = engine_env.start(*TICKER, name="quar", args=("--config", str(cfg), "--metrics-port", "0"))
    with EngineClient(entry.socket) as client:
        wait_for(lambda: (client.snapshot().caches[0].stats or None) and client.snapshot().caches[0].stats.quarantined_bytes == 8192,
                 timeout=20, what="the expired lease shown as quarantined")

    def gauge() -> float | None:
        body = urllib.request.urlopen(entry.metrics_url, timeout=10).read().decode()
        for fam in text_string_to_metric_families(body):
            if fam.name == "cachewatch_cache_quarantined_bytes":
                return next((smp.value for smp in fam.samples if smp.labels.get("root") == str(root)), None)
        return None

    assert wait_for(lambda: gauge() == 8192, timeout=20, what="the metric")
    stalled.reconcile()
    assert wait_for(lambda: gauge() == 0, timeout=20, what="the metric after the reconciler")
    stalled.close()
    assert run_cli("stop", "quar", "--yes").returncode == 0
