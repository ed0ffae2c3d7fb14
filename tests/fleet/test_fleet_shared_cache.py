"""The fleet view says which nodes write to which shared (Redis-indexed) cache: two engines on
two "machines" using one cache root, one real redis-server for the fleet and the cache index."""

from __future__ import annotations

from pathlib import Path

from cachewatch.engine import Cache
from tests.support.engine import EngineEnv, run_cli, wait_for

from .redis_server import RedisServer
from .test_fleet_redis import TICKER, fleet_env, fresh, host_env


def test_fleet_lists_each_shared_cache_with_its_nodes_and_engines(engine_env: EngineEnv, redis_server: RedisServer,
                                                                  tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    for node in ("gpu-1", "gpu-2"):  # the nodes' DataLoader workers, which no engine supervises
        with Cache(shared, max_size="1MiB", index=redis_server.url, node=node) as c:
            c.put(f"from-{node}", b"x" * 100)
    for host in ("alpha", "beta"):
        env = {**host_env(engine_env, host), **fleet_env(redis_server, host),
               "CACHEWATCH_CACHE_ROOT": str(shared), "CACHEWATCH_CACHE_INDEX": redis_server.url,
               "CACHEWATCH_CACHE_NODE": host}
        engine_env.start(*TICKER, name="train", env=env)
    wait_for(lambda: fresh(redis_server, {"alpha/train", "beta/train"}), timeout=30, what="engines fresh")

    def shared_lines() -> str | None:
        out = run_cli("fleet", "--url", redis_server.url).stdout
        return out if "SHARED CACHES" in out and "alpha/train, beta/train" in out else None

    text = str(wait_for(shared_lines, timeout=30, what="the shared cache under the engine table"))
    line = next(ln for ln in text.splitlines() if ln.startswith(redis_server.url))
    assert "nodes: gpu-1, gpu-2" in line and "engines: alpha/train, beta/train" in line
