"""Cost of one ``report.progress(...)`` call, side by side with what a script would do by hand.

    python benchmarks/bench_report.py [--calls 20000] [--dir /tmp]

Compared, in one run, on the same file system:
  * report.progress(...) with CACHEWATCH_PROGRESS_FILE set (the real path);
  * report.progress(...) with the variable unset (the no-op a script pays when run by hand);
  * print(f"...") to a file opened once, line-buffered (what people put in training loops);
  * a bare json.dumps(record) + os.write on an O_APPEND descriptor opened once (the floor
    for writing the same JSON line);
  * import time of the reporting module alone, and of the whole engine package.
Reports the median over 7 repetitions of the per-call time in microseconds, and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def per_call_us(fn, calls: int, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(calls)
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def import_ms(module: str, repeats: int = 5) -> float:
    code = f"import time; t=time.perf_counter(); import {module}; print((time.perf_counter()-t)*1000)"
    return statistics.median(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats)
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()

    from cachewatch.engine.training import report

    work = Path(tempfile.mkdtemp(dir=args.dir))
    target = work / "progress.jsonl"
    n = args.calls

    def run_report(k: int) -> None:
        for i in range(k):
            report.progress(epoch=4, total_epochs=15, step=i, total_steps=500, loss=0.41, lr=3e-4, accuracy=0.87)

    os.environ.pop(report.ENV_VAR, None)
    noop = per_call_us(run_report, n)
    os.environ[report.ENV_VAR] = str(target)
    real = per_call_us(run_report, n)
    os.environ.pop(report.ENV_VAR, None)

    fh = open(work / "print.log", "w", buffering=1)

    def run_print(k: int) -> None:
        for i in range(k):
            print(f"epoch 4/15 step {i}/500 loss 0.41 lr 3e-4 accuracy 0.87", file=fh)

    printed = per_call_us(run_print, n)
    fh.close()

    fd = os.open(work / "raw.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def run_raw(k: int) -> None:
        for i in range(k):
            rec = {"v": 1, "kind": "progress", "epoch": 4, "total_epochs": 15, "step": i, "total_steps": 500,
                   "loss": 0.41, "metrics": {"accuracy": 0.87, "lr": 3e-4}, "t": time.time(), "pid": os.getpid()}
            os.write(fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())

    raw = per_call_us(run_raw, n)
    os.close(fd)

    lines = sum(1 for _ in open(target))
    report_import = import_ms("cachewatch.engine.training.report")
    engine_import = import_ms("cachewatch.engine")

    print(f"calls per repetition: {n}, file system of {work}")
    print(f"report.progress, variable set     : {real:8.2f} us/call  (target < 20 us)")
    print(f"report.progress, variable unset   : {noop:8.3f} us/call")
    print(f"print() to a line-buffered file   : {printed:8.2f} us/call")
    print(f"json.dumps + os.write (floor)     : {raw:8.2f} us/call")
    print(f"ratio report / print              : {real / printed:8.2f}x")
    print(f"ratio report / json.dumps+write   : {real / raw:8.2f}x")
    print(f"import cachewatch.engine.training.report (whole chain): {report_import:.1f} ms")
    print(f"import cachewatch.engine                              : {engine_import:.1f} ms")
    assert lines == 7 * n, f"expected {7 * n} lines, found {lines}"
    for p in work.iterdir():
        p.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
