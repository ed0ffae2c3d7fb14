"""Maintenance jobs run by the engine from a client: verify with progress, result and events."""

from __future__ import annotations

import os

from cachewatch.engine import Cache, load_config
from cachewatch.engine.daemon import EngineClient
from cachewatch.engine.daemon.parts import default_parts

from .util import EngineEnv, python_cmd, wait_for


def test_verify_runs_as_a_job_and_finds_damage(engine_env: EngineEnv) -> None:
    root = engine_env.tmp / "cache"
    with Cache(root, max_size="10MB") as cache:
        paths = [cache.put(f"k{i}", os.urandom(1000)) for i in range(20)]
    paths[3].write_bytes(b"damaged")  # a file changed behind the cache's back
    cfg = engine_env.tmp / "cachewatch.toml"
    cfg.write_text(f"[cache]\nroot = '{root}'\nmax_size = '10MB'\n")
    assert set(default_parts(load_config(cfg)).jobs) >= {"verify", "build", "split"}, "engine/jobs is not in this build"
    entry = engine_env.start(*python_cmd("import time\nwhile True: time.sleep(1)"), name="jobs", args=("--config", str(cfg)))
    with EngineClient(entry.socket) as c:
        job = c.command("verify").job
        assert job.kind == "verify" and job.state == "running"
        wait_for(lambda: next(j for j in c.snapshot().jobs if j.id == job.id).state != "running", timeout=60, what="verify done")
        view = next(j for j in c.snapshot().jobs if j.id == job.id)
        kinds = [e.kind for e in c.events(kinds=["job"])]
    assert view.state == "done" and view.result["ok"] is False  # the damage was found
    assert "k3" in str(dict(view.result)) and view.result["summary"]
    assert kinds[0] == "job.started" and kinds[-1] == "job.finished"
