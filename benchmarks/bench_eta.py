"""ETA error with the trainers people use: real runs, the ETA read at 30-50 % of each run.

    python benchmarks/bench_eta.py [--only hf,keras2,...] [--repeat N] [--threads 1] [--record DIR]
    python benchmarks/bench_eta.py --replay DIR_OR_FILE [...]

Each case runs a tiny real training from tests/training/trainers/ (transformers Trainer,
Lightning with its TQDM and Rich bars, Keras verbose 1 and 2, nested tqdm; CPU, nothing
downloaded) with a fixed sleep per step so its length is known ahead, feeds its output
to a real ProgressFeed as it arrives (a pseudo-terminal where the library draws for one),
and compares, for every snapshot taken between 30 % and 50 % of the training, the ETA with
the true remaining time: error = |eta - truth| / truth, truth = the training's end minus
the snapshot's time. "The training" runs from the first progress the output shows to the
last (imports before it and interpreter teardown after it are not a part any progress bar
knows about; the teardown is printed as "tail"). Reports the mean and the worst relative
error per case.

The trainings run torch on one thread (``OMP_NUM_THREADS=1``; ``--threads 0`` leaves the
libraries' own setting, two threads here). With two threads on the shared 2-core machine a
step of the tiny model waits on its second thread whenever another session's process
holds a core: the transformers steps then took 0.13-0.6 s with the other sessions' load,
the run's speed changed by half while it ran (0.28 s a step in its first fifth, 0.14 s in
its last), and the measured error was that of the machine's load, not of the estimator.
One thread keeps the step time the sleep the case asks for (0.131-0.134 s over all fifths
of the same run, load average 4-5).

``--record DIR`` also writes every run's output chunks with their arrival times
(``DIR/<case>-<n>.json.gz``); ``--replay`` feeds such recordings to the current estimator at
their recorded times (a snapshot every 0.25 s of recorded time, as live), so estimator
changes are compared on the same runs rather than on whatever load the shared machine had.

Needs the ``trainers`` extra. Runs about two and a half minutes in all (live), seconds replayed.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.training.real_run as real_run  # noqa: E402
from cachewatch.engine.training import ProgressFeed, ProgressSnapshot  # noqa: E402

SAMPLE_EVERY_S = 0.25
HEADER = f"{'case':<24} {'samples':>7} {'mean err':>9} {'worst':>7} {'training':>9} {'process':>8} {'tail':>6}  epochs  what"

CASES = {
    # name: (script, args, pty, what reads the progress)
    "hf": ("hf_train.py", ["--epochs", "3", "--steps-per-epoch", "50", "--eval", "--sleep", "0.12"], False,
           "transformers Trainer, eval each epoch"),
    "hf-notqdm": ("hf_train.py", ["--epochs", "3", "--steps-per-epoch", "50", "--no-tqdm", "--sleep", "0.12"], False,
                  "transformers Trainer, disable_tqdm=True"),
    "lightning-rich": ("lightning_train.py", ["--bar", "rich", "--epochs", "5", "--steps", "30", "--sleep", "0.1"], True,
                       "Lightning RichProgressBar"),
    "lightning-tqdm": ("lightning_train.py", ["--bar", "tqdm", "--epochs", "4", "--steps", "20", "--sleep", "0.1"], False,
                       "Lightning TQDMProgressBar"),
    "keras1": ("keras_train.py", ["--verbose", "1", "--epochs", "4", "--steps", "20", "--sleep", "0.1"], True,
               "Keras 3 verbose=1"),
    "keras2": ("keras_train.py", ["--verbose", "2", "--epochs", "5", "--steps", "20", "--sleep", "0.1"], False,
               "Keras 3 verbose=2"),
    "tqdm-nested": ("tqdm_nested.py", ["--epochs", "4", "--steps", "60", "--sleep", "0.04"], False,
                    "nested tqdm, inner leave=False"),
}


def errors(snaps: list[tuple[float, ProgressSnapshot]], final: ProgressSnapshot, ended: float) -> dict:
    """Relative ETA errors of the snapshots between 30 % and 50 % of the training."""
    first = next((t for t, s in snaps if s.epoch is not None or s.step is not None), None)
    if first is None:
        return {"error": "no progress read"}
    # The training ends with the last progress its output shows; what follows (the library's
    # summary, interpreter teardown) is not training, and no progress bar predicts it.
    end = final.updated_time or ended
    span = end - first
    errs = []
    for t, s in snaps:
        if not 0.3 <= (t - first) / span <= 0.5:
            continue
        truth = end - t
        if s.eta.remaining_s is not None and truth > 0:
            errs.append(abs(s.eta.remaining_s - truth) / truth)
    return {"samples": len(errs), "mean_err": statistics.fmean(errs) if errs else None,
            "max_err": max(errs) if errs else None, "train_s": span, "tail_s": ended - end,
            "epochs": f"{final.epoch}/{final.total_epochs}"}


class _RecordingFeed(ProgressFeed):
    """A ProgressFeed that keeps every chunk with its arrival time, for --record."""

    chunks: list[tuple[float, bytes]]

    def feed_output(self, chunk, time_s=None):  # type: ignore[no-untyped-def]
        self.chunks.append((float(time_s or 0.0), bytes(chunk)))
        return super().feed_output(chunk, time_s)


def measure(name: str, record: Path | None = None, index: int = 0, threads: int | None = None) -> dict:
    script, args, pty, label = CASES[name]
    chunks: list[tuple[float, bytes]] = []
    feed_class = type("_Feed", (_RecordingFeed,), {"chunks": chunks})
    real_run.ProgressFeed = feed_class  # type: ignore[misc]
    try:
        env = {"OMP_NUM_THREADS": str(threads)} if threads else None
        run = real_run.run_trainer(script, *args, pty=pty, env=env, sample_every_s=SAMPLE_EVERY_S)
    finally:
        real_run.ProgressFeed = ProgressFeed  # type: ignore[misc]
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
        data = {"case": name, "label": label, "started": run.started, "ended": run.ended,
                "chunks": [[t, base64.b64encode(c).decode()] for t, c in chunks]}
        with gzip.open(record / f"{name}-{index}.json.gz", "wt") as f:
            json.dump(data, f)
    r = errors(run.snapshots, run.final(), run.ended)
    return {"case": name, "label": label, "total_s": run.ended - run.started, **r}


def replay(path: Path) -> dict:
    """Feed a recording to a fresh ProgressFeed at its recorded times; the same figures as live."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    started, ended = data["started"], data["ended"]
    feed = ProgressFeed(started_time=started)
    snaps: list[tuple[float, ProgressSnapshot]] = []
    next_sample = started
    for t, b64 in data["chunks"]:
        while next_sample < t:
            snaps.append((next_sample, feed.snapshot(next_sample)))
            next_sample += SAMPLE_EVERY_S
        feed.feed_output(base64.b64decode(b64), t)
    while next_sample < ended:
        snaps.append((next_sample, feed.snapshot(next_sample)))
        next_sample += SAMPLE_EVERY_S
    feed.finish(ended, "finished")
    r = errors(snaps, feed.snapshot(ended), ended)
    name = path.name.removesuffix(".gz").removesuffix(".json")
    return {"case": name, "label": data.get("label", ""), "total_s": ended - started, **r}


def show(r: dict) -> None:
    name = r["case"]
    if "error" in r:
        print(f"{name:<24} {r['error']}")
    elif r["mean_err"] is None:
        print(f"{name:<24} {0:>7} {'no ETA':>9} {'':>7} {r['train_s']:>8.1f}s {r['total_s']:>7.1f}s {r['tail_s']:>5.1f}s  {r['epochs']:<6}  {r['label']}")
    else:
        print(f"{name:<24} {r['samples']:>7} {r['mean_err'] * 100:>8.1f}% {r['max_err'] * 100:>6.1f}% "
              f"{r['train_s']:>8.1f}s {r['total_s']:>7.1f}s {r['tail_s']:>5.1f}s  {r['epochs']:<6}  {r['label']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated cases: " + ", ".join(CASES))
    ap.add_argument("--repeat", type=int, default=1, help="run each case this many times (default 1)")
    ap.add_argument("--record", type=Path, help="also write each run's output with arrival times into this directory")
    ap.add_argument("--replay", type=Path, nargs="+", help="recordings (files or directories) to replay instead of running")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS for the trainings (default 1; 0: the libraries' own setting)")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    if args.replay:
        missing = [p for p in args.replay if not p.exists()]
        if missing:
            ap.error(f"no such recording or directory: {missing[0]}; make recordings with --record DIR")
        files = sorted(f for p in args.replay for f in (sorted(p.glob("*.json*")) if p.is_dir() else [p]))
        if not files:
            ap.error(f"no recordings (*.json.gz) in {' '.join(map(str, args.replay))}; make some with --record DIR")
        print(HEADER)
        for f in files:
            show(replay(f))
        return
    print(HEADER)
    for i in range(args.repeat):
        for name in names:
            show(measure(name, args.record, i, args.threads))


if __name__ == "__main__":
    main()
