"""The jobs under the engine's runner: its (engine, args, ctx) factories, its cancel event, its progress."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cachewatch.engine import CachewatchError, load_config
from cachewatch.engine.jobs.daemon_adapter import job_factories

from .conftest import make_source, write_config


@dataclass
class EngineContext:
    """What the engine's runner hands a job: a cancel event and a progress callback."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[int, int | None, str, str]] = field(default_factory=list)
    cancel_after: int | None = None

    def progress(self, done: int, total: int | None = None, message: str = "", unit: str = "") -> None:
        self.calls.append((done, total, message, unit))
        if self.cancel_after is not None and len(self.calls) >= self.cancel_after:
            self.cancelled.set()


@dataclass
class Engine:
    config: Any


def test_build_then_verify_through_the_factories(tmp_path: Path, transform_dir: Path) -> None:
    make_source(tmp_path, 5)
    engine = Engine(load_config(write_config(tmp_path)))
    f = job_factories()
    assert set(f) == {"verify", "build", "split", "push", "pull"}
    ctx = EngineContext()
    built = f["build"](engine, {"workers": 2}, ctx)
    assert built["ok"] is True and built["built"] == 5 and "complete" in built["summary"]
    assert any(unit == "items" for _, _, _, unit in ctx.calls)
    checked = f["verify"](engine, {}, EngineContext())
    assert checked["ok"] is True and checked["complete"] is True


def test_split_through_the_factory_needs_confirmation_to_delete(tmp_path: Path) -> None:
    import pickle

    src = tmp_path / "b.pkl"
    src.write_bytes(pickle.dumps(list(range(10))))
    engine = Engine(load_config(write_config(tmp_path)))
    f = job_factories()["split"]
    with pytest.raises(CachewatchError, match="needs confirmed = true"):
        f(engine, {"input": str(src), "output": str(tmp_path / "o"), "delete_original": True}, EngineContext())
    assert src.exists()
    out = f(engine, {"input": str(src), "output": str(tmp_path / "o"), "traces_per_batch": 4,
                     "delete_original": True, "confirmed": True}, EngineContext())
    assert out["ok"] and not src.exists() and len(list((tmp_path / "o").iterdir())) == 3
    with pytest.raises(CachewatchError, match="unknown argument 'bogus'"):
        f(engine, {"input": "x", "output": "y", "bogus": 1}, EngineContext())


def test_the_engines_cancel_event_cancels(tmp_path: Path) -> None:
    import gzip
    import pickle

    import numpy as np

    src = tmp_path / "b.pkl.gz"
    with gzip.open(src, "wb", compresslevel=1) as fh:
        pickle.dump([np.arange(1000.0) for _ in range(300)], fh)
    engine = Engine(load_config(write_config(tmp_path)))
    ctx = EngineContext(cancel_after=3)
    out = job_factories()["split"](engine, {"input": str(src), "output": str(tmp_path / "o"), "traces_per_batch": 2,
                                            "workers": 1}, ctx)
    assert out["cancelled"] is True and out["ok"] is False  # the engine's runner sees its event set: "cancelled"
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
