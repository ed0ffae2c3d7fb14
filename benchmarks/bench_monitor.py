"""How much CPU the monitor's samplers cost, with a training-like tree of DataLoader workers.

    python benchmarks/bench_monitor.py [--workers 12] [--samples 300] [--seconds 30]

1. CPU time per sample (thread CPU time, so other load on the machine does not count)
   of the process tree sampler, the host sampler and the GPU sampler, on a tree of one
   root and ``--workers`` torch DataLoader workers (plain multiprocessing children
   without torch), beside the cost of the manual alternative: running
   ``ps -e -o pid,ppid,rss,pcpu,comm`` once per sample, as ``watch -n1 ps ...`` does.
2. The share of one core a process running the whole ``Monitor`` (three sampler threads,
   1 s interval) uses over ``--seconds`` seconds, against the same process idle.

The target (issue 3) is the whole headless engine under 1 % of one core; these samplers
must be a small part of that. Results are printed and written to
benchmarks/results/bench_monitor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

from cachewatch.engine.monitor import GpuSampler, HostSampler, ProcessTreeSampler

TREE_TORCH = """
import sys, time
import torch
from torch.utils.data import DataLoader, Dataset

class Slow(Dataset):
    def __len__(self):
        return 10**9
    def __getitem__(self, i):
        time.sleep(0.05)
        return torch.zeros(8)

if __name__ == "__main__":
    n = int(sys.argv[1])
    loader = DataLoader(Slow(), batch_size=4, num_workers=n, persistent_workers=True, multiprocessing_context="fork")
    it = iter(loader)
    next(it)
    print("workers", *[w.pid for w in it._workers], flush=True)
    # keep the workers busy at a training-like pace
    for _ in it:
        time.sleep(0.02)
"""

TREE_PLAIN = """
import multiprocessing as mp, sys, time
def work():
    while True:
        time.sleep(0.05)
if __name__ == "__main__":
    n = int(sys.argv[1])
    kids = [mp.get_context("fork").Process(target=work) for _ in range(n)]
    for k in kids:
        k.start()
    print("workers", *[k.pid for k in kids], flush=True)
    sys.stdin.read()
"""

SOAK = """
import sys, time
from cachewatch.engine.monitor import Monitor
root, seconds, disk, idle = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4] == "idle"
monitor = None if idle else Monitor(disk_path=disk, root_pid=root, interval_s=1.0).start()
time.sleep(1.5)  # past start-up: imports, NVML open, the first samples
cpu0, wall0 = time.process_time(), time.monotonic()
time.sleep(seconds)
cpu1, wall1 = time.process_time(), time.monotonic()
snap = monitor.snapshot() if monitor else None
if monitor:
    monitor.stop()
print("result", cpu1 - cpu0, wall1 - wall0, snap.tree.worker_count if snap else -1, len(monitor.tree.history()) if monitor else 0)
"""


def start_tree(workers: int, scripts: Path) -> tuple[subprocess.Popen, list[int], str]:
    try:
        import torch  # noqa: F401

        code, kind = TREE_TORCH, "torch DataLoader"
    except ImportError:
        code, kind = TREE_PLAIN, "multiprocessing"
    script = scripts / "tree.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.Popen([sys.executable, str(script), str(workers)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("workers"):
        proc.kill()
        sys.exit(f"bench_monitor: the worker tree did not start (got {line!r})")
    return proc, [int(p) for p in line.split()[1:]], kind


def per_sample_cpu_us(sampler, n: int) -> dict[str, float]:
    sampler.sample()
    sampler.sample()
    costs = []
    for _ in range(n):
        t0 = time.thread_time_ns()
        sampler.sample()
        costs.append((time.thread_time_ns() - t0) / 1000)
    return {"mean_us": statistics.fmean(costs), "median_us": statistics.median(costs), "p95_us": sorted(costs)[int(0.95 * n)]}


def ps_cpu_us(n: int) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        subprocess.run(["ps", "-e", "-o", "pid,ppid,rss,pcpu,comm"], stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"mean_us": cpu / n * 1e6}


def soak(root: int, seconds: float, disk: str, idle: bool) -> tuple[float, float, int, int]:
    out = subprocess.run([sys.executable, "-c", SOAK, str(root), str(seconds), disk, "idle" if idle else "run"],
                         capture_output=True, text=True, timeout=seconds + 120)
    line = next((l for l in out.stdout.splitlines() if l.startswith("result")), None)
    if line is None:
        sys.exit(f"bench_monitor: soak failed: {out.stderr.strip()[-2000:]}")
    cpu, wall, workers, samples = line.split()[1:]
    return float(cpu), float(wall), int(workers), int(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tree, worker_pids, kind = start_tree(args.workers, Path(tmp))
        try:
            tree_sampler = ProcessTreeSampler(tree.pid)
            deadline = time.monotonic() + 30
            while tree_sampler.sample().worker_count < args.workers:
                if time.monotonic() > deadline:
                    sys.exit("bench_monitor: the workers never all showed up")
                time.sleep(0.1)
            snap = tree_sampler.latest()
            gpu = GpuSampler(training_pids=tree_sampler.pids)
            gpu_state = gpu.sample()
            walks_before = tree_sampler.full_walks
            tree_cost = per_sample_cpu_us(tree_sampler, args.samples)
            tree_cost["full_walks_share"] = (tree_sampler.full_walks - walks_before) / (args.samples + 2)
            results = {
                "machine": {"python": platform.python_version(), "cpus": psutil.cpu_count(),
                            "processes_on_system": len(psutil.pids()), "tree": kind,
                            "tree_processes": len(snap.processes), "workers_found": snap.worker_count,
                            "worker_detection": snap.worker_detection,
                            "gpu_state": gpu_state.state, "gpu_reason": gpu_state.reason},
                "per_sample": {
                    "process_tree": tree_cost,
                    "host": per_sample_cpu_us(HostSampler(tmp), args.samples),
                    "gpu": per_sample_cpu_us(gpu, args.samples),
                    "ps_subprocess": ps_cpu_us(min(args.samples, 100)),
                },
            }
            gpu.stop()
            ours = sum(results["per_sample"][k]["mean_us"] for k in ("process_tree", "host", "gpu"))
            results["per_sample"]["all_three_mean_us"] = ours
            results["per_sample"]["ps_over_ours"] = results["per_sample"]["ps_subprocess"]["mean_us"] / ours

            run_cpu, run_wall, seen_workers, samples = soak(tree.pid, args.seconds, tmp, idle=False)
            idle_cpu, idle_wall, _, _ = soak(tree.pid, args.seconds, tmp, idle=True)
            results["soak"] = {
                "seconds": run_wall,
                "samples_per_sampler": samples,
                "workers_seen": seen_workers,
                "monitor_core_percent": 100 * run_cpu / run_wall,
                "idle_process_core_percent": 100 * idle_cpu / idle_wall,
                "monitor_minus_idle_core_percent": 100 * (run_cpu / run_wall - idle_cpu / idle_wall),
            }
        finally:
            os.killpg(tree.pid, 9)
            tree.wait()

    m, p, s = results["machine"], results["per_sample"], results["soak"]
    print(f"tree: 1 root + {m['workers_found']} workers ({m['tree']}, found by {m['worker_detection']}); "
          f"{m['processes_on_system']} processes on the system; {m['cpus']} CPUs; GPU: {m['gpu_state']}")
    print("CPU time per sample (thread time, mean / median / p95):")
    for name in ("process_tree", "host", "gpu"):
        r = p[name]
        print(f"  {name:13s} {r['mean_us']:8.0f} / {r['median_us']:8.0f} / {r['p95_us']:8.0f} us")
    print(f"  {'all three':13s} {p['all_three_mean_us']:8.0f} us   (the tree was walked in full at "
          f"{100 * p['process_tree']['full_walks_share']:.0f} % of its samples: processes were created meanwhile)")
    print(f"  ps subprocess {p['ps_subprocess']['mean_us']:8.0f} us   ({p['ps_over_ours']:.1f}x ours)")
    print(f"Monitor soak, 1 s interval, {s['seconds']:.0f} s: {s['monitor_core_percent']:.3f} % of one core "
          f"(idle process {s['idle_process_core_percent']:.3f} %, difference {s['monitor_minus_idle_core_percent']:.3f} %); "
          f"{s['samples_per_sampler']} samples, {s['workers_seen']} workers seen")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_monitor.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
