"""Maintenance jobs run by the engine from a client: verify with progress, result and events; split in
its own process, which a kill -9 fails cleanly while the engine lives on."""

from __future__ import annotations

import gzip
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import psutil

from cachewatch.engine import Cache, load_config
from cachewatch.engine.daemon import EngineClient
from cachewatch.engine.daemon.parts import default_parts

from tests.support.engine import EngineEnv, python_cmd, wait_for


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


def _big_batch(path: Path) -> None:
    with gzip.open(path, "wb", compresslevel=1) as f:
        pickle.dump([np.random.default_rng(i).random(20000) for i in range(400)], f)


def test_kill_9_of_the_split_process_fails_the_job_cleanly_and_the_engine_lives_on(engine_env: EngineEnv) -> None:
    src = engine_env.tmp / "big.pkl.gz"
    _big_batch(src)
    before = src.read_bytes()
    out = engine_env.tmp / "out"
    entry = engine_env.start(*python_cmd("import time\nwhile True: time.sleep(1)"), name="splitkill")
    with EngineClient(entry.socket) as c:
        job = c.command("split", input=str(src), output=str(out), traces_per_batch=2, workers=1, compress_level=9,
                        delete_original=True, confirmed=True).job

        def split_pid() -> int | None:  # sub-batches are written as NAME.<pid of the split process>.part
            parts = [p.name for p in out.iterdir()] if out.exists() else []
            return next((int(n.split(".")[-2]) for n in parts if n.endswith(".part")), None)

        pid = wait_for(split_pid, timeout=120, what="the split process writing sub-batches")
        assert pid != entry.pid and pid in {q.pid for q in psutil.Process(entry.pid).children(recursive=True)}
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: next(j for j in c.snapshot().jobs if j.id == job.id).state != "running", timeout=60,
                 what="the job to end")
        view = next(j for j in c.snapshot().jobs if j.id == job.id)
        assert view.state == "failed" and f"(pid {pid}) was killed by signal 9" in (view.error or ""), view
        assert src.read_bytes() == before  # the original is untouched (and was not deleted)
        assert not out.exists()  # no .part, no half-published output, not even the directory it made
        # the engine is alive and runs the next split to the end, from a new child process
        again = c.command("split", input=str(src), output=str(out), traces_per_batch=200).job
        wait_for(lambda: next(j for j in c.snapshot().jobs if j.id == again.id).state != "running", timeout=120,
                 what="the second split")
        view = next(j for j in c.snapshot().jobs if j.id == again.id)
        assert view.state == "done" and view.result["ok"] is True, view
        assert sorted(p.name for p in out.iterdir()) == ["big_sub0000.pkl.gz", "big_sub0001.pkl.gz"]
        assert view.phase == "split" and view.bytes_done > 0  # progress kept its phase and bytes to the snapshot
        finished = [e for e in c.events(kinds=["job"]) if e.kind == "job.finished"]
    assert psutil.pid_exists(entry.pid)
    assert [e.fields.get("state") for e in finished][-2:] == ["failed", "done"]


def test_cancel_of_a_split_in_its_process_leaves_nothing(engine_env: EngineEnv) -> None:
    src = engine_env.tmp / "big.pkl.gz"
    _big_batch(src)
    before = src.read_bytes()
    out = engine_env.tmp / "out"
    entry = engine_env.start(*python_cmd("import time\nwhile True: time.sleep(1)"), name="splitcancel")
    with EngineClient(entry.socket) as c:
        job = c.command("split", input=str(src), output=str(out), traces_per_batch=2, workers=1, compress_level=9).job
        wait_for(lambda: out.exists() and any(p.name.endswith(".part") for p in out.iterdir()), timeout=120,
                 what="sub-batches being written")
        c.command("cancel_job", job_id=job.id)
        wait_for(lambda: next(j for j in c.snapshot().jobs if j.id == job.id).state != "running", timeout=60,
                 what="the job to end")
        view = next(j for j in c.snapshot().jobs if j.id == job.id)
    assert view.state == "cancelled", view
    assert src.read_bytes() == before and not out.exists()
