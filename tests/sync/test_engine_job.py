"""Push and pull as engine jobs, the way the dashboard starts them: a real engine, a real socket."""

from __future__ import annotations

from cachewatch.engine.daemon import EngineClient
from tests.support.engine import EngineEnv, python_cmd, wait_for
from tests.sync.util import cache_content, make_cache


def test_pull_and_push_run_as_engine_jobs_with_byte_progress(engine_env: EngineEnv) -> None:
    tmp = engine_env.tmp
    content = make_cache(tmp / "built", files=30)
    remote = tmp / "volume"
    cfg = tmp / "cachewatch.toml"
    cfg.write_text(f"[cache]\nroot = '{tmp / 'cache'}'\nmax_size = '20MB'\nremote = '{remote}'\n")
    entry = engine_env.start(*python_cmd("import time\nwhile True: time.sleep(1)"), name="sync", args=("--config", str(cfg)))
    with EngineClient(entry.socket) as c:
        pushed = c.command("push", root=str(tmp / "built")).job
        assert pushed.kind == "push"
        wait_for(lambda: next(j for j in c.snapshot().jobs if j.id == pushed.id).state != "running", timeout=60, what="push done")
        view = next(j for j in c.snapshot().jobs if j.id == pushed.id)
        assert view.state == "done" and view.result["committed"] and view.result["files_transferred"] == 30

        pulled = c.command("pull").job
        wait_for(lambda: next(j for j in c.snapshot().jobs if j.id == pulled.id).state != "running", timeout=60, what="pull done")
        view = next(j for j in c.snapshot().jobs if j.id == pulled.id)
        assert view.state == "done" and view.result["ok"] and view.result["files_transferred"] == 30
        assert "cache matches manifest 1" in view.result["summary"]
    assert cache_content(tmp / "cache") == content
