"""A [[watch]] directory under the engine: its figures in the snapshot, its evictions in the
event stream, and the evict command aimed at it."""

from __future__ import annotations

import os
import time

from cachewatch.engine import load_config
from cachewatch.engine.daemon import EngineClient
from cachewatch.engine.daemon.parts import default_parts

from tests.support.engine import EngineEnv, python_cmd, run_cli, wait_for


def test_a_watched_directory_is_shown_evicted_and_recorded(engine_env: EngineEnv) -> None:
    root = engine_env.tmp / "theirs"
    root.mkdir()
    for i in range(20):
        (root / f"f{i:02d}.bin").write_bytes(os.urandom(10_000))
        old = time.time() - 3600 + i  # written an hour ago, oldest first
        os.utime(root / f"f{i:02d}.bin", (old, old))
    cfg = engine_env.tmp / "cachewatch.toml"
    cfg.write_text(f"[[watch]]\nroot = '{root}'\nmax_size = '1MB'\nmin_age = '0s'\n")
    assert default_parts(load_config(cfg)).new_watch is not None, "engine/watch is not in this build"
    entry = engine_env.start(*python_cmd("import time\nwhile True: time.sleep(1)"), name="watch", args=("--config", str(cfg)))
    with EngineClient(entry.socket) as c:
        wait_for(lambda: c.snapshot().watched and c.snapshot().watched[0].entries == 20, what="watched figures")
        w = c.snapshot().watched[0]
        assert w.root == str(root) and w.size_bytes == 200_000
        result = c.command("evict", root=str(root), to="100KB")
        assert result.files == 10 and result.root == str(root)
        assert sorted(p.name for p in root.iterdir()) == [f"f{i:02d}.bin" for i in range(10, 20)]  # the oldest went
        wait_for(lambda: [e.get("files") for e in c.events(kinds=["eviction"])] == [10], what="eviction event")
        assert c.events(kinds=["eviction"])[0].get("cache") == str(root)
        wait_for(lambda: c.snapshot().watched[0].entries == 10, what="figures after eviction")
    status = run_cli("status", "watch").stdout
    assert f"watched   {root}:" in status
