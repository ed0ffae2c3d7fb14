"""The ACL of docs/fleet.md, exactly as written there, against a real redis-server: engines and
`cachewatch fleet` work as that user, and the user can touch nothing outside cachewatch's keys."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.support.engine import REPO, EngineEnv, run_cli, wait_for

from .redis_server import RedisServer
from .test_fleet_redis import TICKER, host_env

PASSWORD = "s3cret-for-test"


def documented_acl() -> list[str]:
    text = (REPO / "docs" / "fleet.md").read_text()
    block = re.search(r"<!-- acl-begin -->\s*```\n(.*?)\n```\s*<!-- acl-end -->", text, re.S)
    assert block, "docs/fleet.md lost its ACL block"
    return shlex.split(block.group(1).replace(">CHANGE-ME", f">{PASSWORD}"))


def test_the_documented_acl_user_runs_the_fleet_and_nothing_else(engine_env: EngineEnv, redis_server: RedisServer) -> None:
    import redis

    admin = redis_server.client()
    assert admin.execute_command(*documented_acl()) == b"OK"
    admin.set("other:secret", "x")
    env = {**host_env(engine_env, "acl-node"), "CACHEWATCH_FLEET_URL": redis_server.url,
           "CACHEWATCH_FLEET_USERNAME": "cachewatch", "CACHEWATCH_FLEET_PASSWORD": PASSWORD,
           "CACHEWATCH_FLEET_HOST": "acl-node", "CACHEWATCH_FLEET_INTERVAL": "0.5s",
           "CACHEWATCH_FLEET_ACCEPT_COMMANDS": "true"}
    entry = engine_env.start(*TICKER, name="acl", env=env)
    viewer = {"CACHEWATCH_FLEET_URL": redis_server.url, "CACHEWATCH_FLEET_USERNAME": "cachewatch",
              "CACHEWATCH_FLEET_PASSWORD": PASSWORD}

    def fleet() -> dict:
        out = run_cli("fleet", "--json", env=viewer)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    view = wait_for(lambda: (lambda v: v if v["engines"] and v["engines"][0]["summary"] else None)(fleet()),
                    timeout=30, what="the engine in the fleet, read as the ACL user")
    assert view["engines"][0]["summary"]["pid"] == entry.pid
    out = run_cli("fleet", "--send", "acl", "pause", env=viewer)  # a command, its reply, as that user
    assert out.returncode == 0, out.stderr
    wait_for(lambda: (fleet()["engines"][0]["summary"] or {}).get("training_state") == "paused", timeout=10,
             what="paused")
    assert "unreachable" not in (engine_env.state / "acl-node" / "cachewatch" / "acl" / "engine.log").read_text()

    limited = redis.Redis(host="127.0.0.1", port=redis_server.port, username="cachewatch", password=PASSWORD)
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.get("other:secret")
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.config_get("*")
    # A wrong password is refused, and the fleet view says Redis is unreachable rather than showing anything.
    out = run_cli("fleet", "--json", env={**viewer, "CACHEWATCH_FLEET_PASSWORD": "wrong"})
    assert out.returncode == 1 and json.loads(out.stdout)["engines"] == []
