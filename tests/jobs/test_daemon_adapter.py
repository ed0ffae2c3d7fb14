"""The jobs under the engine's runner: its (engine, args, ctx) factories, its cancel token, its progress."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cachewatch.engine import CachewatchError, load_config
from cachewatch.engine.jobs import CancelToken, JobContext, JobEvent, JobProgress
from cachewatch.engine.jobs.daemon_adapter import job_factories

from .conftest import make_source, write_config


def engine_context(cancel_after: int | None = None) -> tuple[JobContext, list[JobProgress]]:
    """The context the engine's runner hands a job (the jobs' own JobContext), recording progress;
    with ``cancel_after`` it cancels itself after that many progress events."""
    seen: list[JobProgress] = []

    def emit(event: JobEvent) -> None:
        if isinstance(event, JobProgress):
            seen.append(event)
            if cancel_after is not None and len(seen) >= cancel_after:
                ctx.token.cancel()

    ctx = JobContext("job-1", "any", CancelToken(), emit, min_interval_s=0.0)
    return ctx, seen


@dataclass
class Engine:
    config: Any


def test_build_then_verify_through_the_factories(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 5)
    engine = Engine(load_config(write_config(tmp_path)))
    f = job_factories()
    assert set(f) == {"verify", "build", "split"}
    ctx, seen = engine_context()
    built = f["build"](engine, {"workers": 2}, ctx)
    assert built["ok"] is True and built["built"] == 5 and "complete" in built["summary"]
    assert any(p.phase == "build" and p.unit == "items" and p.total == 5 for p in seen)  # phase kept, not folded
    checked = f["verify"](engine, {}, engine_context()[0])
    assert checked["ok"] is True and checked["complete"] is True


def test_split_through_the_factory_needs_confirmation_to_delete(tmp_path: Path) -> None:
    import pickle

    src = tmp_path / "b.pkl"
    src.write_bytes(pickle.dumps(list(range(10))))
    engine = Engine(load_config(write_config(tmp_path)))
    f = job_factories()["split"]
    with pytest.raises(CachewatchError, match="needs confirmed = true"):
        f(engine, {"input": str(src), "output": str(tmp_path / "o"), "delete_original": True}, engine_context()[0])
    assert src.exists()
    ctx, seen = engine_context()
    out = f(engine, {"input": str(src), "output": str(tmp_path / "o"), "traces_per_batch": 4,
                     "delete_original": True, "confirmed": True}, ctx)
    assert out["ok"] and not src.exists() and len(list((tmp_path / "o").iterdir())) == 3
    # from the split's child process: phase and bytes arrive as the job reported them
    assert {"load", "split"} <= {p.phase for p in seen}
    assert any(p.phase == "load" and p.bytes_total for p in seen)
    with pytest.raises(CachewatchError, match="unknown argument 'bogus'"):
        f(engine, {"input": "x", "output": "y", "bogus": 1}, engine_context()[0])
    with pytest.raises(CachewatchError, match="compress_level = 'abc' must be a whole number from 0 to 9"):
        f(engine, {"input": str(src), "output": "y", "compress_level": "abc"}, engine_context()[0])


def test_the_engines_cancel_event_cancels(tmp_path: Path) -> None:
    import gzip
    import pickle

    import numpy as np

    src = tmp_path / "b.pkl.gz"
    with gzip.open(src, "wb", compresslevel=1) as fh:
        pickle.dump([np.arange(1000.0) for _ in range(300)], fh)
    engine = Engine(load_config(write_config(tmp_path)))
    ctx, _ = engine_context(cancel_after=3)
    out = job_factories()["split"](engine, {"input": str(src), "output": str(tmp_path / "o"), "traces_per_batch": 2,
                                            "workers": 1}, ctx)
    assert out["cancelled"] is True and out["ok"] is False  # the engine's runner sees its event set: "cancelled"
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
