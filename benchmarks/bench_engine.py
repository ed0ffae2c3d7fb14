"""The headless engine's own cost, and how fast an event reaches a connected client.

    python benchmarks/bench_engine.py [--seconds 60] [--trials 20] [--workers 2]

Measured in one run, on this machine:

CPU share
    A real headless engine (``cachewatch run --headless``) supervising the example training
    (``examples/train_cached.py``, DataLoader workers, a progress report every step, a
    managed cache), sampling once a second. The engine process's own CPU time (user +
    system, not the training's) over ``--seconds``, as a percentage of one core: with no
    client (headless), with a client subscribed to every snapshot, events and the log, and
    with a client taking at most one snapshot a second (``interval_s=1``, a dashboard).
    Side by side, the same for what people ran instead (seed 000): a shell loop doing
    ``du -sh <cache>`` every second, the equivalent of ``watch -n 1 du -sh``.
    Target: under 1 % of one core.

Latency, event to client
    A client subscribed to snapshots and the log. For each trial, the time from
    * an eviction done by another process (``Cache.evict`` in this script) to the first
      snapshot whose eviction log shows it, and to the first whose cache figures include it,
    * a line the training prints (it waits on a FIFO for the cue) to the log push carrying it,
    * a progress report the training writes (same cue) to the first snapshot whose progress
      shows it (only when the progress feed is part of the build).
    Median, 95th percentile and maximum. Target: under 200 ms.

Results go to stdout and to ``benchmarks/results/bench_engine.json``.
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

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cachewatch.engine import Cache  # noqa: E402
from cachewatch.engine.daemon import EngineClient, start_daemon  # noqa: E402
from cachewatch.engine.daemon.protocol import LogPush, SnapshotPush  # noqa: E402
from cachewatch.engine.daemon.snapshot import EngineSnapshot  # noqa: E402


def _has_epoch(snap: EngineSnapshot) -> bool:
    return snap.progress is not None and snap.progress.epoch is not None


CUED_TRAINING = r"""
import os, sys, time
try:
    from cachewatch.engine import report
except ImportError:
    report = None
fifo = sys.argv[1]
while True:
    with open(fifo) as fh:
        for cue in fh:
            n = int(cue)
            print(f"cue {n}", flush=True)
            if report is not None:
                report.progress(epoch=n, total_epochs=100000, step=1, total_steps=10)
"""


def cpu_seconds(proc: psutil.Process, children: bool = False) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    if children:
        total += t.children_user + t.children_system
    return total


def measure_cpu(pid: int, seconds: float, children: bool = False) -> float:
    proc = psutil.Process(pid)
    c0, t0 = cpu_seconds(proc, children), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(proc, children), time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0)


def stop(entry) -> None:
    try:
        with EngineClient(entry.socket) as c:
            c.command("stop", what="engine")
    except Exception:
        pass
    deadline = time.monotonic() + 30
    while psutil.pid_exists(entry.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def bench_cpu(tmp: Path, seconds: float, workers: int) -> dict:
    root = tmp / "cache"
    cfg = tmp / "cachewatch.toml"
    cfg.write_text(f"[cache]\nroot = '{root}'\nmax_size = '50MB'\n[monitor]\ninterval = '1s'\n")
    command = [sys.executable, str(REPO / "examples" / "train_cached.py"), "--epochs", "100000", "--steps", "50",
               "--batch-size", "8", "--workers", str(workers), "--step-ms", "50", "--print-every", "10"]
    entry = start_daemon(cfg, command=command, name="bench-cpu", cwd=tmp)
    out: dict = {}
    try:
        time.sleep(8)  # past torch start-up and the first epoch's cache fill
        out["engine_no_client_pct"] = measure_cpu(entry.pid, seconds)
        for label, interval in (("engine_one_client_pct", 0.0), ("engine_one_client_1s_pct", 1.0)):
            with EngineClient(entry.socket, client_name="bench") as client:
                client.subscribe(snapshots=True, events=True, log=True, interval_s=interval)
                stop_reading = time.monotonic() + seconds
                proc = psutil.Process(entry.pid)
                c0, t0 = cpu_seconds(proc), time.monotonic()
                pushes = 0
                while time.monotonic() < stop_reading:
                    if client.recv(0.5) is not None:
                        pushes += 1
                out[label] = 100.0 * (cpu_seconds(proc) - c0) / (time.monotonic() - t0)
                out[label.replace("_pct", "_pushes_per_s")] = pushes / seconds
                snap = client.snapshot()
        out["training_state"] = snap.training.state.value
        out["workers_seen"] = snap.workers.worker_count if snap.workers is not None else None
        out["progress_source"] = snap.progress.source if snap.progress is not None else None
        du_loop = subprocess.Popen(["sh", "-c", f"while true; do du -sh '{root}' >/dev/null; sleep 1; done"])
        try:
            out["du_loop_pct"] = measure_cpu(du_loop.pid, seconds, children=True)
        finally:
            du_loop.kill()
            du_loop.wait()
        out["cache_entries"] = snap.caches[0].stats.entries if snap.caches and snap.caches[0].stats else None
    finally:
        stop(entry)
    return out


def _summary(values: list[float]) -> dict:
    values = sorted(values)
    return {
        "n": len(values),
        "median_ms": round(1000 * statistics.median(values), 1),
        "p95_ms": round(1000 * values[min(len(values) - 1, int(0.95 * len(values)))], 1),
        "max_ms": round(1000 * values[-1], 1),
    }


def bench_latency(tmp: Path, trials: int) -> dict:
    root = tmp / "lcache"
    cfg = tmp / "latency.toml"
    cfg.write_text(f"[cache]\nroot = '{root}'\nmax_size = '100MB'\n[monitor]\ninterval = '1s'\n")
    fifo = tmp / "cue"
    os.mkfifo(fifo)
    with Cache(root, max_size="100MB") as cache:
        for i in range(trials * 4):
            cache.put(f"item/{i}", os.urandom(20_000))
    entry = start_daemon(cfg, command=[sys.executable, "-u", "-c", CUED_TRAINING, str(fifo)], name="bench-lat", cwd=tmp)
    evict_s: list[float] = []
    stats_s: list[float] = []
    line_s: list[float] = []
    progress_s: list[float] = []
    try:
        with EngineClient(entry.socket, client_name="bench") as client, Cache(root) as cache:
            client.subscribe(snapshots=True, log=True)
            time.sleep(1.0)
            for n in range(1, trials + 1):
                # An eviction by another process.
                before = client.snapshot().caches[0].stats.evicted_files
                t0 = time.perf_counter()
                report = cache.evict(to=max(0, cache.stats().size_bytes - 60_000))
                in_log = in_stats = None
                while in_log is None or in_stats is None:
                    msg = client.recv(5)
                    assert msg is not None, "no snapshot within 5 s of an eviction"
                    if not isinstance(msg, SnapshotPush):
                        continue
                    now = time.perf_counter() - t0
                    s = msg.snapshot
                    if in_log is None and s.evictions and abs(s.evictions[0].time - report.time) < 1e-3:
                        in_log = now
                    if in_stats is None and s.caches[0].stats.evicted_files > before:
                        in_stats = now
                evict_s.append(in_log)
                stats_s.append(in_stats)
                # A printed line and a progress report, cued through the FIFO.
                t0 = time.perf_counter()
                with open(fifo, "w") as fh:
                    fh.write(f"{n}\n")
                got_line = got_progress = None
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and (got_line is None or got_progress is None):
                    msg = client.recv(0.5)
                    now = time.perf_counter()
                    if isinstance(msg, LogPush) and f"cue {n}\n" in msg.chunk.data and got_line is None:
                        got_line = now - t0
                    if isinstance(msg, SnapshotPush) and msg.snapshot.progress is not None and msg.snapshot.progress.epoch == n and got_progress is None:
                        got_progress = now - t0
                    if got_line is not None and msg is None and not _has_epoch(client.snapshot()):
                        break  # no progress feed in this build: only the line is measured
                assert got_line is not None, "the printed line never reached the client"
                line_s.append(got_line)
                if got_progress is not None:
                    progress_s.append(got_progress)
                time.sleep(0.3)
    finally:
        stop(entry)
    out = {"eviction_to_snapshot_eviction_log": _summary(evict_s), "eviction_to_snapshot_cache_stats": _summary(stats_s),
           "printed_line_to_log_push": _summary(line_s)}
    if progress_s:
        out["progress_report_to_snapshot"] = _summary(progress_s)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each CPU measurement")
    ap.add_argument("--trials", type=int, default=20, help="latency trials per kind of event")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the example training")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cwb-", dir="/tmp") as d:
        tmp = Path(d)
        (tmp / "run").mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(tmp / "run")
        os.environ["XDG_STATE_HOME"] = str(tmp / "state")
        results = {
            "machine": {"cpus": psutil.cpu_count(), "python": sys.version.split()[0]},
            "cpu": bench_cpu(tmp, args.seconds, args.workers),
            "latency": bench_latency(tmp, args.trials),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
    cpu = results["cpu"]
    print(f"engine CPU, {args.seconds:g}s, 1 s sampling, training running "
          f"({cpu['workers_seen']} workers seen, progress from {cpu['progress_source']}):")
    print(f"  no client           {cpu['engine_no_client_pct']:.2f} % of one core")
    print(f"  one client          {cpu['engine_one_client_pct']:.2f} % of one core "
          f"({cpu['engine_one_client_pushes_per_s']:.1f} pushes/s: every snapshot, events, log)")
    print(f"  one client, 1 s     {cpu['engine_one_client_1s_pct']:.2f} % of one core "
          f"({cpu['engine_one_client_1s_pushes_per_s']:.1f} pushes/s: snapshots at most 1/s, as a dashboard asks)")
    print(f"  du -sh loop, 1 s    {cpu['du_loop_pct']:.2f} % of one core  "
          f"(engine/du ratio {cpu['engine_one_client_pct'] / max(cpu['du_loop_pct'], 1e-9):.2f})")
    for name, s in results["latency"].items():
        print(f"latency {name:<30} median {s['median_ms']} ms, p95 {s['p95_ms']} ms, max {s['max_ms']} ms (n={s['n']})")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_engine.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
