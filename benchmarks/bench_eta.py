"""ETA error with the trainers people use: real runs, the ETA read at 30-50 % of each run.

    python benchmarks/bench_eta.py [--only hf,keras2,...] [--scale 1.0]

Each case runs a tiny real training from tests/training/trainers/ (transformers Trainer,
Lightning with its TQDM and Rich bars, Keras verbose 1 and 2, nested tqdm; CPU, nothing
downloaded) with a fixed sleep per step so its length is known ahead, feeds its output
to a real ProgressFeed as it arrives (a pseudo-terminal where the library draws for one),
and compares, for every snapshot taken between 30 % and 50 % of the training, the ETA with
the true remaining time (the last progress the output shows minus the snapshot time).
"The training" runs from the first progress the output shows to the last (imports before
it and interpreter teardown after it are not a part any progress bar knows about; the
teardown is printed as "tail"). Reports the mean and the worst relative error per case.

Needs the ``trainers`` extra. Runs about two minutes in all.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.training.real_run import run_trainer  # noqa: E402

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


def measure(name: str) -> dict:
    script, args, pty, label = CASES[name]
    run = run_trainer(script, *args, pty=pty, sample_every_s=0.25)
    snaps = run.snapshots
    first = next((t for t, s in snaps if s.epoch is not None or s.step is not None), None)
    if first is None:
        return {"case": name, "label": label, "error": "no progress read"}
    final = run.final()
    # The training ends with the last progress its output shows; what follows (the library's
    # summary, interpreter teardown) is not training, and no progress bar predicts it.
    end = final.updated_time or run.ended
    span = end - first
    errs = []
    for t, s in snaps:
        frac = (t - first) / span
        if not 0.3 <= frac <= 0.5:
            continue
        truth = end - t
        if s.eta.remaining_s is not None:
            errs.append(abs(s.eta.remaining_s - truth) / truth)
    return {
        "case": name, "label": label, "samples": len(errs),
        "mean_err": statistics.fmean(errs) if errs else None, "max_err": max(errs) if errs else None,
        "train_s": span, "total_s": run.ended - run.started, "tail_s": run.ended - end,
        "epochs": f"{final.epoch}/{final.total_epochs}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated cases: " + ", ".join(CASES))
    args = ap.parse_args()
    print(f"{'case':<16} {'samples':>7} {'mean err':>9} {'worst':>7} {'training':>9} {'process':>8} {'tail':>6}  epochs  what")
    for name in args.only.split(","):
        r = measure(name.strip())
        if "error" in r:
            print(f"{name:<16} {r['error']}")
            continue
        if r["mean_err"] is None:
            print(f"{name:<16} {0:>7} {'no ETA':>9} {'':>7} {r['train_s']:>8.1f}s {r['total_s']:>7.1f}s {r['tail_s']:>5.1f}s  {r['epochs']:<6}  {r['label']}")
            continue
        print(f"{name:<16} {r['samples']:>7} {r['mean_err'] * 100:>8.1f}% {r['max_err'] * 100:>6.1f}% "
              f"{r['train_s']:>8.1f}s {r['total_s']:>7.1f}s {r['tail_s']:>5.1f}s  {r['epochs']:<6}  {r['label']}")


if __name__ == "__main__":
    main()
