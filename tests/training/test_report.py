"""The reporting API a training script calls: real files, real processes, a real full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from cachewatch.engine import report as engine_report
from cachewatch.engine.training import ReportReader, report


@pytest.fixture
def progress_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(report.ENV_VAR, str(path))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reexported_from_the_engine_package() -> None:
    assert engine_report is report


def test_unset_variable_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(report.ENV_VAR, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = report.dropped()
    report.progress(epoch=1, total_epochs=2, step=3, total_steps=4, loss=0.5)
    report.epoch_end(1)
    report.checkpoint(tmp_path / "ckpt.pt")
    report.event("lr_drop", lr=1e-5)
    assert not report.enabled()
    assert list(work.iterdir()) == []
    assert report.dropped() == before


def test_each_call_appends_one_record(progress_file: Path) -> None:
    report.epoch_start(4, 15, total_steps=500)
    report.progress(epoch=4, total_epochs=15, step=120, total_steps=500, loss=0.41, lr=3e-4, accuracy=0.87)
    report.epoch_end(4, 15, loss=0.4, val_loss=0.38)
    report.checkpoint(progress_file.parent / "epoch4.pt", epoch=4)
    report.event("lr_drop", lr=1e-5)
    lines = _lines(progress_file)
    assert [r["kind"] for r in lines] == ["epoch_start", "progress", "epoch_end", "checkpoint", "event"]
    p = lines[1]
    assert (p["epoch"], p["total_epochs"], p["step"], p["total_steps"], p["loss"]) == (4, 15, 120, 500, 0.41)
    assert p["metrics"] == {"accuracy": 0.87, "lr": 3e-4}
    assert p["pid"] == os.getpid() and p["v"] == 1 and isinstance(p["t"], float)
    assert lines[2]["metrics"] == {"val_loss": 0.38}
    assert lines[3]["path"].endswith("epoch4.pt") and lines[3]["epoch"] == 4
    assert lines[4]["name"] == "lr_drop" and lines[4]["fields"] == {"lr": 1e-5}


def test_bad_values_never_raise_and_are_kept_where_possible(progress_file: Path) -> None:
    class Scalar:  # what numpy scalars and 0-d tensors look like to json
        def item(self) -> float:
            return 0.25

    class Weird:
        def __str__(self) -> str:
            return "weird"

    circular: dict = {}
    circular["self"] = circular
    before = report.dropped()
    report.progress(epoch="four", step=Scalar(), loss=float("nan"), note=Weird(), grad=float("inf"))
    report.progress(epoch=1, bad=circular)  # cannot be encoded: dropped, not raised
    report.checkpoint(Weird())
    lines = _lines(progress_file)
    assert report.dropped() == before + 1
    assert len(lines) == 2
    assert lines[0]["epoch"] == "four" and lines[0]["step"] == 0.25
    assert lines[0]["metrics"]["note"] == "weird"
    assert str(lines[0]["loss"]) == "nan"


def test_threads_never_interleave(progress_file: Path) -> None:
    def work(k: int) -> None:
        for i in range(300):
            report.progress(epoch=k, step=i, loss=0.5, payload="x" * (i % 50))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _lines(progress_file)  # json.loads on each line: a torn or merged line fails here
    assert len(lines) == 8 * 300
    for k in range(8):
        assert [r["step"] for r in lines if r["epoch"] == k] == list(range(300))


WORKERS_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, os, sys
    from cachewatch.engine.training import report

    def worker(k):
        for i in range(200):
            report.progress(epoch=k, step=i, worker=os.getpid(), blob="y" * 300)

    if __name__ == "__main__":
        report.progress(epoch=0, step=0)  # opens the file in the parent before forking
        ctx = mp.get_context(sys.argv[1])
        procs = [ctx.Process(target=worker, args=(k,)) for k in range(1, 7)]
        for p in procs: p.start()
        for p in procs: p.join()
        sys.exit(max(p.exitcode for p in procs))
    """
)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_never_interleave(tmp_path: Path, start_method: str) -> None:
    path = tmp_path / "progress.jsonl"
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)
    env = {**os.environ, report.ENV_VAR: str(path)}
    subprocess.run([sys.executable, str(script), start_method], env=env, check=True, timeout=120)
    lines = _lines(path)
    assert len(lines) == 1 + 6 * 200
    pids = {r["pid"] for r in lines if r["epoch"] != 0}
    assert len(pids) == 6
    for k in range(1, 7):
        assert sorted(r["step"] for r in lines if r["epoch"] == k) == list(range(200))


def test_rank_is_recorded_for_distributed_runs(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    env = {**os.environ, report.ENV_VAR: str(path), "RANK": "3"}
    code = "from cachewatch.engine.training import report; report.progress(epoch=1, step=2)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert _lines(path)[0]["rank"] == "3"


def test_importing_report_does_not_load_the_parsers() -> None:
    code = (
        "import sys, json\n"
        "from cachewatch.engine.training import report\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cachewatch.engine.training'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["cachewatch.engine.training", "cachewatch.engine.training.report"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_drops_records_and_training_goes_on(tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny_tmpfs / "progress.jsonl"
    filler = tiny_tmpfs / "filler"
    monkeypatch.setenv(report.ENV_VAR, str(path))
    before = report.dropped()
    # Fill the disk with the progress file itself, up to and past ENOSPC.
    for i in range(2000):
        report.progress(epoch=1, step=i, loss=0.5, pad="z" * 97)
    assert report.dropped() > before  # the disk did fill
    reader = ReportReader(path)
    good = reader.read_new()
    assert good and [r.step for r in good] == list(range(len(good)))  # every record read is whole and in order
    # Free room: later records land and are readable, even after a torn write.
    path.rename(filler)
    filler.unlink()
    report.progress(epoch=1, step=99999, loss=0.25)
    assert [r.step for r in ReportReader(path).read_new()] == [99999]


def test_a_removed_progress_file_is_created_again(progress_file: Path) -> None:
    import time

    report.progress(epoch=1, step=1)
    progress_file.unlink()
    time.sleep(1.1)  # the writer checks its file once a second, not on every call
    report.progress(epoch=1, step=2)
    assert [r["step"] for r in _lines(progress_file)] == [2]
