"""split of a big ``.pkl.gz`` batch: cachewatch against seed 002's load-split-save, same run.

Targets (issue 4): for a 1 GB ``.pkl.gz`` of 1000 items,

* peak RSS of ``cachewatch split`` at most 1.3x the unpickled input;
* wall time with ``--workers 2`` at most 0.6x a single-process load-split-save done the
  way seed 002's ``divide_conquer.py`` describes it (below, ``seed_split``).

Each contender runs in its own fresh process; peak RSS is that process's ``ru_maxrss``
(from ``wait4``), wall time is measured around it. "The unpickled input" (U) is measured
too: the RSS a process gains by loading the input, after its imports.

Contenders (all split the same input with ``-n 250``, into a fresh directory):

``seed``            seed 002's manner: gzip.open + pickle.load the whole list; for each
                    sub-batch pickle.dump into gzip.open(.part) (gzip's default level 9),
                    rename; then load every output back and check the total count.
``cachewatch-w2``   ``cachewatch split --workers 2`` (its default level 6; validation loads
                    each sub-batch back and compares every item)
``cachewatch-w2-l9`` the same at level 9, the seed's level: the gain from parallel
                    compression alone
``cachewatch-w1``   one worker

Run:

    python benchmarks/bench_split.py                  # 1 GB input (takes a while)
    python benchmarks/bench_split.py --size 200MB     # quick look
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def parse_size(text: str) -> int:
    sys.path.insert(0, str(REPO))
    from cachewatch.engine.sizes import parse_size as ps

    return ps(text)


# --------------------------------------------------------------------------- seed 002's way
def seed_split(inp: Path, out_dir: Path, n: int) -> None:
    """divide_conquer.py as its guide describes it: load, split, save each (.part, rename), validate counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(inp, "rb") as f:
        data = pickle.load(f)
    total = len(data)
    name = inp.name[: -len(".pkl.gz")]
    outputs = []
    for i, start in enumerate(range(0, total, n)):
        sub = data[start : start + n]
        final = out_dir / f"{name}_sub{i:04d}.pkl.gz"
        part = final.with_name(final.name + ".part")
        with gzip.open(part, "wb") as f:  # gzip's default compresslevel: 9
            pickle.dump(sub, f)
        part.rename(final)
        outputs.append(final)
        del sub
        gc.collect()
    count = 0
    for p in outputs:
        with gzip.open(p, "rb") as f:
            count += len(pickle.load(f))
        gc.collect()
    if count != total:
        raise SystemExit(f"validation failed: {count} != {total}")


def measure_loaded(inp: Path) -> None:
    """Print the RSS this process gains by loading the input (after imports), and the total."""
    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss
    with gzip.open(inp, "rb") as f:
        data = pickle.load(f)
    after = proc.memory_info().rss
    print(json.dumps({"items": len(data), "delta": after - before, "rss": after, "base": before}))


# ---------------------------------------------------------------------------------- input
def make_item(rng: np.random.Generator, i: int, elems: int, data: str) -> dict:
    if data == "dense":  # incompressible activations: compression costs the same at any level
        hidden = rng.standard_normal(elems, dtype=np.float32).astype(np.float16)
        return {"trace_id": i, "prompt": f"question {i}", "hidden": hidden}
    # "trace": sparse activations, token ids and rounded log-probs; compresses ~2.6x,
    # in line with seed 002 ("uncompressed files take ~3-4x more space")
    x = rng.standard_normal(elems, dtype=np.float32)
    return {
        "trace_id": i,
        "prompt": f"question {i}: what is the capital of country {i % 197}?",
        "tokens": rng.integers(0, 2000, elems // 8, dtype=np.int32),
        "hidden": np.where(x > 0.6, x, 0).astype(np.float16),
        "logprobs": np.round(-np.abs(rng.standard_normal(elems // 8).astype(np.float32)), 2),
        "label": bool(i % 2),
    }


RATIO = {"trace": 0.40, "dense": 0.93}  # compressed / raw at level 6, measured once


def make_input(path: Path, size: int, items: int, data: str) -> dict:
    """``items`` trace-like dicts whose compressed pickle is about ``size`` bytes."""
    rng = np.random.default_rng(42)
    raw_per_item = size / items / RATIO[data]
    elems = max(64, int(raw_per_item / (3.0 if data == "trace" else 2.0)))  # bytes per element of the item's arrays
    with gzip.open(path, "wb", compresslevel=6) as f:
        pickle.dump([make_item(rng, i, elems, data) for i in range(items)], f, protocol=4)
    return {"items": items, "file_bytes": path.stat().st_size, "data": data}


# --------------------------------------------------------------------------------- running
def run_measured(argv: list[str], cwd: Path) -> dict:
    """Run ``argv`` (a Python command) under a wrapper that reports its own VmHWM at exit.

    ``ru_maxrss`` from ``wait4`` would not do: Linux carries the parent's high-water mark
    across fork and exec, so every child would look as big as this benchmark process.
    """
    fd, hwm_file = tempfile.mkstemp(prefix="cw-hwm-")
    os.close(fd)
    wrapped = [argv[0], __file__, "--_hwm", hwm_file, "--", *argv[1:]]
    t0 = time.perf_counter()
    proc = subprocess.run(wrapped, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
    peak = int(Path(hwm_file).read_text() or 0)
    os.unlink(hwm_file)
    return {"wall_s": wall, "peak_rss": peak, "stdout": proc.stdout.decode()}


def _run_with_hwm(hwm_file: str, argv: list[str]) -> None:
    import atexit
    import runpy

    def report() -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                Path(hwm_file).write_text(str(int(line.split()[1]) * 1024))

    atexit.register(report)
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GB", help="compressed size of the input (default 1GB)")
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("-n", type=int, default=250, help="traces per batch")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--only", default=None, help="comma list of contenders to run")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each contender, interleaved; the median wall time is kept")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_seed", nargs=3, metavar=("IN", "OUT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--_loaded", metavar="IN", help=argparse.SUPPRESS)
    ap.add_argument("--data", choices=("trace", "dense"), default="trace",
                    help="trace: compressible like seed 002's traces (default); dense: incompressible float16")
    if len(sys.argv) > 2 and sys.argv[1] == "--_hwm":
        _run_with_hwm(sys.argv[2], sys.argv[4:])
        return
    args = ap.parse_args()
    if args._seed:
        seed_split(Path(args._seed[0]), Path(args._seed[1]), int(args._seed[2]))
        return
    if args._loaded:
        measure_loaded(Path(args._loaded))
        return

    size = parse_size(args.size)
    work = Path(args.dir or tempfile.mkdtemp(prefix="cw-bench-split-"))
    work.mkdir(parents=True, exist_ok=True)
    inp = work / "batch_0000.pkl.gz"
    t0 = time.perf_counter()
    info = make_input(inp, size, args.items, args.data)
    print(f"input: {inp} {info['file_bytes'] / 1e6:.0f} MB compressed, {args.items} items "
          f"(made in {time.perf_counter() - t0:.0f}s)", flush=True)

    py = sys.executable
    loaded = json.loads(run_measured([py, __file__, "--_loaded", str(inp)], REPO)["stdout"])
    base = run_measured([py, "-c", "import cachewatch.engine.cli, cachewatch.engine.jobs.split, psutil"], REPO)["peak_rss"]
    u = loaded["delta"]
    print(f"unpickled input U: {u / 1e6:.0f} MB (RSS gained by loading it); interpreter+imports {base / 1e6:.0f} MB", flush=True)

    contenders = {
        "seed": lambda out: [py, __file__, "--_seed", str(inp), str(out), str(args.n)],
        "cachewatch-w2": lambda out: [py, "-m", "cachewatch.tui.cli", "split", "-i", str(inp), "-o", str(out), "-n", str(args.n), "--workers", "2", "-q"],
        "cachewatch-w2-l9": lambda out: [py, "-m", "cachewatch.tui.cli", "split", "-i", str(inp), "-o", str(out), "-n", str(args.n), "--workers", "2", "--compress-level", "9", "-q"],
        "cachewatch-w1": lambda out: [py, "-m", "cachewatch.tui.cli", "split", "-i", str(inp), "-o", str(out), "-n", str(args.n), "--workers", "1", "-q"],
    }
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only.split(",")}
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for rep in range(args.repeat):  # interleaved, so a burst of load on a shared machine hits every contender
        for name, argv in contenders.items():
            out = work / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            r = run_measured(argv(out), REPO)
            r["output_bytes"] = sum(p.stat().st_size for p in out.iterdir())
            r["outputs"] = len(list(out.iterdir()))
            runs[name].append(r)
            print(f"  run {rep + 1}: {name:<18} {r['wall_s']:7.1f}s  peak RSS {r['peak_rss'] / 1e6:7.0f} MB", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    results = {}
    for name, rs in runs.items():
        r = dict(rs[0])
        r["wall_s"] = statistics.median(x["wall_s"] for x in rs)
        r["walls_s"] = [x["wall_s"] for x in rs]
        r["peak_rss"] = max(x["peak_rss"] for x in rs)
        r["rss_over_u"] = (r["peak_rss"] - base) / u
        r["rss_over_loaded"] = r["peak_rss"] / loaded["rss"]
        results[name] = r
        print(f"{name:<18} wall {r['wall_s']:7.1f}s (median of {len(rs)})  peak RSS {r['peak_rss'] / 1e6:7.0f} MB  "
              f"(peak - base) / U = {r['rss_over_u']:.2f}  peak / RSS-after-load = {r['rss_over_loaded']:.2f}  "
              f"{r['outputs']} files, {r['output_bytes'] / 1e6:.0f} MB", flush=True)

    print()
    if "seed" in results:
        s = results["seed"]["wall_s"]
        for name, r in results.items():
            if name != "seed":
                print(f"wall {name} / seed = {r['wall_s'] / s:.2f}")
    if "cachewatch-w2" in results:
        r = results["cachewatch-w2"]
        ok_time = "seed" in results and r["wall_s"] <= 0.6 * results["seed"]["wall_s"]
        print(f"target wall(cachewatch --workers 2) <= 0.6 x seed: {'met' if ok_time else 'NOT met'}")
        print(f"target peak RSS <= 1.3 x U: {'met' if r['rss_over_u'] <= 1.3 else 'NOT met'} ({r['rss_over_u']:.2f})")
    if args.json:
        print(json.dumps({"input": info, "u_bytes": u, "base_rss": base, "results": {
            k: {kk: vv for kk, vv in v.items() if kk != "stdout"} for k, v in results.items()}}, indent=2))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
