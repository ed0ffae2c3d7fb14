"""The Engine object without a socket (as a dashboard process may run it): jobs, alerts,
snapshots and commands, with real trainings and a real cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cachewatch.engine import Cache, load_config
from cachewatch.engine.daemon import Engine, EngineParts
from cachewatch.engine.daemon.alerts import AlertBoard
from cachewatch.engine.daemon.errors import CommandFailed

from tests.support.engine import python_cmd, wait_for


@pytest.fixture
def make_engine(tmp_path: Path):
    made: list[Engine] = []

    def make(command=(), parts: EngineParts | None = None, config_text: str = "", **kw) -> Engine:
        cfg_path = tmp_path / "cachewatch.toml"
        cfg_path.write_text(config_text)
        engine = Engine(load_config(cfg_path), name=f"e{len(made)}", command=command, state_dir=tmp_path / f"state{len(made)}",
                        parts=parts or EngineParts(), **kw)
        made.append(engine)
        return engine.start()

    yield make
    for e in made:
        e.close()


def test_a_job_reports_progress_and_can_be_cancelled(make_engine) -> None:
    release = threading.Event()

    # Only verify's own arguments pass the command table: this job reads ``workers`` as its
    # item count and ``quick`` as "slowly".
    def counting_job(engine, args, ctx):
        for i in range(args.get("workers", 5)):
            if ctx.cancelled:  # ctx: the jobs' JobContext (engine/jobs/base.py), as every job gets it
                return {"counted": i, "cancelled": True}
            ctx.progress("count", i + 1, args.get("workers", 5), message=f"item {i}")
            if args.get("quick"):
                release.wait(0.05)
        return {"counted": args.get("workers", 5)}

    engine = make_engine(parts=EngineParts(jobs={"verify": counting_job}))
    job = engine.execute("verify", {"workers": 3})["job"]
    wait_for(lambda: engine.snapshot().jobs[0].state == "done", what="job done")
    view = engine.snapshot().jobs[0]
    assert view.id == job["id"] and view.done == 3 and view.total == 3 and dict(view.result) == {"counted": 3}
    assert view.phase == "count" and view.unit == "items"
    wait_for(lambda: engine.query_events(kinds=["job.finished"]), what="job.finished event")
    kinds = [e.kind for e in engine.query_events(kinds=["job"])]
    assert kinds[0] == "job.started" and kinds[-1] == "job.finished" and "job.progress" in kinds

    long = engine.execute("verify", {"workers": 1000, "quick": True})["job"]
    with pytest.raises(CommandFailed, match="a verify job is already running"):
        engine.execute("verify", {})
    engine.execute("cancel_job", {"job_id": long["id"]})
    wait_for(lambda: engine.snapshot().jobs[0].state != "running", what="job cancelled")
    assert engine.snapshot().jobs[0].state == "cancelled"


def test_a_job_kind_that_is_not_built_in_is_unavailable(make_engine) -> None:
    engine = make_engine()
    with pytest.raises(CommandFailed) as err:
        engine.execute("split", {"input": "a.pkl", "output": "out"})
    assert err.value.code == "unavailable" and "run `cachewatch split` instead" in str(err.value)


def test_a_crashing_job_fails_alone(make_engine) -> None:
    def broken(engine, args, ctx):
        raise RuntimeError("disk on fire")

    engine = make_engine(parts=EngineParts(jobs={"build": broken}))
    engine.execute("build", {})
    wait_for(lambda: engine.snapshot().jobs and engine.snapshot().jobs[0].state == "failed", what="failed")
    assert engine.snapshot().jobs[0].error == "RuntimeError: disk on fire"


def test_alerts_raised_again_are_counted_not_stacked() -> None:
    board = AlertBoard()
    a, new = board.raise_alert("memory", "warning", "Memory", "90 %", key="memory", now=1.0)
    b, again = board.raise_alert("memory", "warning", "Memory", "91 %", key="memory", now=2.0)
    assert new and not again and a.id == b.id and b.count == 2 and b.text == "91 %"
    board.clear("memory")
    assert not board.alerts()[0].active
    c, new = board.raise_alert("memory", "warning", "Memory", "95 %", key="memory", now=3.0)
    assert new and c.id != a.id
    assert board.dismiss(c.id).dismissed
    with pytest.raises(KeyError):
        board.dismiss("nope")


def test_an_engine_without_training_watches_the_cache(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    with Cache(root, max_size="1MB") as cache:
        cache.put("a", b"x" * 1000)
    engine = make_engine(config_text=f"[cache]\nroot = '{root}'\nmax_size = '1MB'\n")
    wait_for(lambda: engine.snapshot().caches and engine.snapshot().caches[0].stats is not None, what="cache stats")
    snap = engine.snapshot()
    assert snap.training is None and snap.caches[0].stats.entries == 1
    with pytest.raises(CommandFailed, match="this engine runs no training"):
        engine.execute("pause")
    report = engine.execute("evict", {"to": 0})
    assert report["files"] == 1 and report["describe"].startswith("Evicted 1 file")
    assert engine.snapshot().evictions[0].files == 1  # the command's answer and the snapshot agree at once


def test_snapshots_are_published_in_order_to_listeners(make_engine) -> None:
    engine = make_engine(command=python_cmd("import time\nfor i in range(30): print(i, flush=True); time.sleep(0.02)"))
    seen: list[int] = []
    engine.add_snapshot_listener(lambda s: seen.append(s.seq))
    wait_for(lambda: engine.supervisor.info().state.over, what="training over")
    time.sleep(0.3)
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and len(seen) >= 2


def test_training_output_reaches_log_listeners_in_order(make_engine) -> None:
    engine = make_engine(command=python_cmd("for i in range(2000): print(f'line {i}')"))
    pieces: list[tuple[int, bytes]] = []
    engine.add_log_listener(lambda off, data: pieces.append((off, data)))
    wait_for(lambda: engine.supervisor.info().state.over, what="training over")
    wait_for(lambda: b"line 1999\n" in b"".join(d for _, d in pieces), what="all output")
    offsets = [o for o, _ in pieces]
    assert all(o + len(d) == n for (o, d), n in zip(pieces, offsets[1:]))  # contiguous, no gap, no repeat
    assert engine.read_log(0, 1 << 20).data.count("\nline ") == 2000


def test_exit_with_training_asks_the_owner_to_stop(make_engine) -> None:
    engine = make_engine(command=python_cmd("raise SystemExit(5)"), exit_with_training=True)
    assert engine.stopped.wait(30)
    assert engine.stop_reason == "the training ended"
    assert engine.supervisor.info().exit_code == 5
