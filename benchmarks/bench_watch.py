"""Benchmark of watched directories against the targets of issue 5, side by side with ``du -sb``.

    python benchmarks/bench_watch.py                  # 144,000 files in 256 directories
    python benchmarks/bench_watch.py --files 20000    # quicker, for iteration
    python benchmarks/bench_watch.py --json out.json  # figures as JSON too

Measured in one run, on one tree (sparse files with realistic names and apparent
sizes, like seed 000's image cache):

1. start-up scan: ``Scanner.scan`` + building the index, against ``du -sb`` of the
   same tree, interleaved, median of ``--repeat`` runs (and the whole ``start()``);
2. memory per tracked file: tracemalloc around the index build, and the RSS delta
   of a started watcher;
3. size shown = ``du -sb`` of the counted files (``find -type f | du -sbc``) after a
   writer stops, and how long after;
4. enforcement: a writer process at full speed pushes the tree over max; the time
   from the real crossing (from the writer's own log) to the first unlink, and the
   peak real size against max plus what the writer wrote in that second;
5. idle CPU of the watching process over ``--idle-s`` seconds, and the periodic
   scan's cost spread over its interval.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import xxhash

from cachewatch.engine.sizes import format_size  # noqa: E402
from cachewatch.engine.watch import FileIndex, WatchedDirectory  # noqa: E402
from cachewatch.engine.watch.filters import PathFilter  # noqa: E402
from cachewatch.engine.watch.scanner import RootIdentity, Scanner  # noqa: E402

DIRS = 256

WRITER = r"""
import os, sys, time, json
root, n_bytes, file_bytes, log, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
payload = os.urandom(file_bytes)
written, i = 0, 0
out = []
t0 = time.time()
while written < n_bytes:
    p = f"{root}/{i % 256:02x}/{prefix}_{i:08d}.jpg"  # new names: every write adds bytes
    with open(p, "wb") as f:
        f.write(payload)
    written += file_bytes
    out.append((time.time(), written))
    i += 1
with open(log, "w") as f:
    json.dump(out, f)
"""


def make_tree(root: Path, files: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    for d in range(DIRS):
        (root / f"{d:02x}").mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(files):
        name = xxhash.xxh128_hexdigest(f"https://images.example/{i}".encode())[:32] + ".jpg"
        size = rng.randint(20_000, 200_000)
        fd = os.open(root / f"{i % DIRS:02x}" / name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(fd, size)  # sparse: apparent size like a real image, no disk used
        os.close(fd)
        total += size
    return total


def du_sb(root: Path) -> tuple[int, float]:
    t = time.perf_counter()
    out = subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]), time.perf_counter() - t


def du_files(root: Path) -> int:
    """``du -sb`` of the regular files only (what cachewatch counts)."""
    find = subprocess.Popen(["find", str(root), "-type", "f", "-print0"], stdout=subprocess.PIPE)
    out = subprocess.run(["du", "-sbc", "--files0-from=-"], stdin=find.stdout, capture_output=True, text=True, check=True)
    find.wait()
    return int(out.stdout.strip().splitlines()[-1].split()[0])


def rid(root: Path) -> RootIdentity:
    st = os.stat(root)
    return RootIdentity(os.path.realpath(root), st.st_dev, st.st_ino)


def bench_scan(root: Path, repeat: int, workers: int | None) -> dict:
    times: dict[str, list[float]] = {"du -sb": [], "scan (auto workers)": [], "scan (in-process)": []}
    s_auto = Scanner(rid(root), PathFilter(), True, workers=workers)
    s_one = Scanner(rid(root), PathFilter(), True, workers=0)
    n_workers = 0
    for _ in range(repeat):
        _, t = du_sb(root)
        times["du -sb"].append(t)
        for label, s in (("scan (auto workers)", s_auto), ("scan (in-process)", s_one)):
            s.last_files = None  # always the start-up path
            t0 = time.perf_counter()
            chunk, report = s.scan()
            FileIndex.from_chunk(chunk)
            times[label].append(time.perf_counter() - t0)
            if s is s_auto:
                n_workers = report.workers
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "workers": n_workers,
        "ratio_scan_to_du": med["scan (auto workers)"] / med["du -sb"],
        "ratio_in_process_to_du": med["scan (in-process)"] / med["du -sb"],
    }


def bench_memory(root: Path) -> dict:
    chunk, _ = Scanner(rid(root), PathFilter(), True, workers=0).scan()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx = FileIndex.from_chunk(chunk)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "files": idx.entries,
        "index_bytes_per_file_tracemalloc": (after - before) / max(1, idx.entries),
        "index_bytes_per_file_estimate": idx.memory_bytes() / max(1, idx.entries),
    }


RSS_PROBE = r"""
import gc, json, os, sys, time
import psutil
from cachewatch.engine.watch import WatchedDirectory  # everything imported before the first reading
import watchdog.observers, numpy, xxhash
gc.collect()
p = psutil.Process()
before = p.memory_info().rss
w = WatchedDirectory(sys.argv[1], "1PB", state_dir=sys.argv[2], scan_workers=None)
w.start()
gc.collect()
time.sleep(1.0)
after = p.memory_info().rss
files = w.stats().entries
w.stop()
print(json.dumps({"rss_before": before, "rss_after": after, "files": files}))
"""


def rss_per_file(root: Path, state: Path) -> dict:
    """RSS of a fresh process before and after starting a watcher (modules already imported)."""
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(root), str(state)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    r["bytes_per_file"] = (r["rss_after"] - r["rss_before"]) / max(1, r["files"])
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=144_000)
    ap.add_argument("--dir", help="where to build the tree (default: a temporary directory)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None, help="scan workers (default: auto)")
    ap.add_argument("--write-mb", type=int, default=1024, help="what the full-speed writer writes")
    ap.add_argument("--file-kb", type=int, default=1024, help="size of the writer's files")
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--min-age", default="1s",
                    help="min_age of the enforcement run (the tree was just built; in real use it is hours old)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="cw-bench-", dir=args.dir))
    root, state = base / "cache", base / "state"
    root.mkdir()
    results: dict = {"files": args.files, "dirs": DIRS, "cpus": len(os.sched_getaffinity(0)),
                     "load_avg_at_start": os.getloadavg()}
    try:
        print(f"building {args.files} files in {DIRS} directories under {root} ...", flush=True)
        total = make_tree(root, args.files)
        du_sb(root)  # warm the caches for everyone alike

        r = bench_scan(root, args.repeat, args.workers)
        results["scan"] = r
        print(f"\n1. start-up scan of {args.files} files (median of {args.repeat}, interleaved):")
        for k, v in r["median_s"].items():
            print(f"   {k:<22} {v:7.3f} s   (min {r['min_s'][k]:.3f} s)")
        print(f"   scan / du -sb = {r['ratio_scan_to_du']:.2f}  ({r['workers']} worker processes); "
              f"in-process / du -sb = {r['ratio_in_process_to_du']:.2f}")

        m = bench_memory(root)
        results["memory"] = m
        rss = rss_per_file(root, state)
        results["memory"]["rss_delta_bytes_per_file"] = rss["bytes_per_file"]
        t0 = time.perf_counter()
        w = WatchedDirectory(root, total * 2, min_age="30s", state_dir=state, scan_workers=args.workers)
        w.start()
        start_s = time.perf_counter() - t0
        results["start_s"] = start_s
        print(f"\n2. memory: index {m['index_bytes_per_file_tracemalloc']:.1f} bytes/file (tracemalloc); "
              f"a started watcher in a fresh process: +{rss['bytes_per_file']:.1f} bytes/file of RSS "
              f"(index, watchdog's watches, threads, scan buffers); start() took {start_s:.3f} s")

        try:
            # 3. size shown vs du -sb after a writer stops: sample stats() every 5 ms while a writer
            # writes and deletes, then find when the shown size became (and stayed) du's figure.
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.time(), w.stats().size_bytes))
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            log = base / "w1.json"
            subprocess.run([sys.executable, "-c", WRITER, str(root), str(200 * 2**20), str(100_000), str(log), "a"], check=True)
            for p in list((root / "07").iterdir())[:200]:
                p.unlink()
            t_stop = time.time()
            time.sleep(2.0)
            stop.set()
            sampler.join()
            truth = du_files(root)
            settled = None
            for t, size in reversed(samples):
                if size != truth:
                    break
                settled = t
            lag = None if settled is None else max(0.0, settled - t_stop)
            du_total, _ = du_sb(root)
            results["size_match"] = {"du_files_bytes": truth, "du_sb_root_bytes": du_total,
                                     "shown_bytes": w.stats().size_bytes, "seconds_after_writes_stopped": lag}
            print(f"\n3. size shown {w.stats().size_bytes} B, du -sb of the files {truth} B "
                  f"(du -sb of the root, directories included: {du_total} B); "
                  + (f"equal {lag:.3f} s after the writes stopped" if lag is not None else "NOT equal 2 s after the writes stopped"))
        finally:
            w.stop()

        # 4. enforcement while a writer writes at full speed
        size_now = du_files(root)
        max_bytes = size_now + args.write_mb * 2**20 // 4
        w = WatchedDirectory(root, max_bytes, min_age=args.min_age, state_dir=state, scan_workers=args.workers)
        unlinks: list[tuple[float, int]] = []
        original = w.after_unlink

        def timed_after_unlink(rel_dir: str, name: bytes, dir_fd: int) -> None:
            # benchmark instrumentation: when each file went, and its size, for the real size over time
            with w._lock:
                d = w._tree.dir_id(rel_dir, create=False)
                known = None if d is None else w._tree.get(d, name)
            unlinks.append((time.time(), known[0] if known else 0))
            original(rel_dir, name, dir_fd)

        w.after_unlink = timed_after_unlink  # type: ignore[method-assign]
        w.start()
        try:
            log = base / "w2.json"
            subprocess.run([sys.executable, "-c", WRITER, str(root), str(args.write_mb * 2**20), str(args.file_kb * 1024), str(log), "b"],
                           check=True)
            writes = json.loads(log.read_text())
            time.sleep(1.0)
            evs = [e for e in w.events.read(kinds=("eviction",)) if e.time >= writes[0][0] - 1]
        finally:
            w.stop()
        t_cross = next((t for t, b in writes if size_now + b > max_bytes), None)
        res4: dict = {"max_bytes": max_bytes, "writer_bytes": writes[-1][1],
                      "writer_bytes_per_s": writes[-1][1] / max(1e-9, writes[-1][0] - writes[0][0])}
        if t_cross is not None and evs:
            first = min(e.get("first_unlink_time") or e.time for e in evs)
            detected = min((e.get("over_max_since") or e.time) for e in evs)
            in_second = sum(1 for t, _ in writes if t_cross <= t < t_cross + 1.0) * args.file_kb * 1024
            # the real size just after each write: initial + written - what was unlinked by then
            unlinks.sort()
            peak, j, deleted = 0, 0, 0
            for t, b in writes:
                while j < len(unlinks) and unlinks[j][0] <= t:
                    deleted += unlinks[j][1]
                    j += 1
                peak = max(peak, size_now + b - deleted)
            res4.update(
                crossing_to_detection_s=detected - t_cross,
                crossing_to_first_unlink_s=first - t_cross,
                peak_over_max_bytes=peak - max_bytes,
                written_in_the_second_after_crossing=in_second,
                passes=len(evs),
                evicted_files=sum(int(e.get("files", 0)) for e in evs),
                evicted_bytes=sum(int(e.get("bytes", 0)) for e in evs),
                pass_seconds=[round(float(e.get("duration_s", 0.0)), 3) for e in evs],
            )
            print(f"\n4. enforcement: writer at {format_size(res4['writer_bytes_per_s'], binary=False)}/s; "
                  f"max passed at t0, seen by the index +{res4['crossing_to_detection_s']:.3f} s, "
                  f"first unlink +{res4['crossing_to_first_unlink_s']:.3f} s; peak real size "
                  f"{format_size(res4['peak_over_max_bytes'], binary=False)} over max vs "
                  f"{format_size(in_second, binary=False)} written in the second after the crossing; "
                  f"{len(evs)} passes evicted {res4['evicted_files']} files in {res4['pass_seconds']} s")
        else:
            print("\n4. enforcement: the writer did not pass max or no eviction happened", res4)
        results["enforcement"] = res4

        # 5. idle CPU
        w = WatchedDirectory(root, max_bytes * 4, state_dir=state, scan_workers=args.workers)
        w.start()
        try:
            time.sleep(2.0)
            c0, t0 = time.process_time(), time.time()
            time.sleep(args.idle_s)
            idle = (time.process_time() - c0) / (time.time() - t0) * 100
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            c0 = time.process_time()
            rep = w.scan()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            scan_cpu = (time.process_time() - c0) + (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        finally:
            w.stop()
        results["idle"] = {"idle_cpu_percent": idle, "scan_cpu_s": scan_cpu, "scan_wall_s": rep.duration_s,
                           "scan_interval_s": w.scan_interval_s,
                           "scan_amortized_cpu_percent": scan_cpu / w.scan_interval_s * 100}
        print(f"\n5. idle CPU over {args.idle_s:.0f} s: {idle:.3f} % of one core; one reconciling scan costs "
              f"{scan_cpu:.2f} CPU-s every {w.scan_interval_s:.0f} s = {results['idle']['scan_amortized_cpu_percent']:.3f} %")
        results["load_avg_at_end"] = os.getloadavg()
        print(f"\nload average at start {results['load_avg_at_start']}, at end {results['load_avg_at_end']}; "
              f"{results['cpus']} CPUs")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
