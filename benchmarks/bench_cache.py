"""How far over its limit does each cache go with many writer processes, and how fast is it?

Contenders, all in one run, each on a private tmpfs so the file system's own used-bytes
count is exact:

* ``cachewatch``    -- this project's managed cache
* ``diskcache``     -- ``diskcache.Cache(size_limit=max)``, the best-known Python disk cache
* ``seed-before``   -- seed 000's LRUImageCache as first written: one counter per process,
                       write first, evict after (evict to max)
* ``seed-after``    -- seed 000's fixed version: target = 90 % of max, evict before writing,
                       evict to target, evict at start-up; still one counter per process
* ``plain``         -- plain file writes with no cache logic (the throughput ceiling)
* ``floor``         -- the minimal bounded writer (issue 11): a flock'ed shared byte counter,
                       evict = unlink of the oldest files, xxh3 of each value, no index. What
                       any cache that keeps a hard bound across processes must at least pay.

N processes put random values of 64-512 KiB until ``factor x max`` bytes are written in
total. A sampler process reads, every few ms, the tmpfs used bytes (``statvfs``: everything,
index included) and a directory walk (value files and writes in flight, not the
contender's own index). Then every process reads random keys from everything ever
written (get throughput, hit rate).

Each configuration runs on ``--fs`` ``tmpfs`` (a private mount: exact used bytes) and/or
``disk`` (a directory under ``--disk-dir``, default /var/tmp; peak use from the directory walk,
since other programs share that filesystem). For cachewatch the worker also records how long
each hold of the reservation mutex lasted (the per-put critical section: median and p99, and
holds per put: one per put plus one per batch of index rows and per eviction round), and each
hold of the index lock (one per batch commit or eviction transaction, not per put). Every
contender's workers also report the CPU time they spent putting (all threads), per put: on a
machine shared with other work that moves far less between runs than puts/s does.

``--syscalls N`` adds system calls per put, counted by ``strace -f -c`` (every thread) on one
process putting into a full cache (max ``--max``) on a tmpfs: two runs, W and W + N puts with
the same values, and their difference over N, so start-up and filling are not counted.

Run (root, for the tmpfs mounts):

    python benchmarks/bench_cache.py                      # 1, 4, 12, 16 processes; tmpfs and disk
    python benchmarks/bench_cache.py --procs 4 --factors 3 --fs tmpfs   # a quick look
    python benchmarks/bench_cache.py --procs 4 --factors 4 --contenders cachewatch,floor --syscalls 2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

KiB, MiB = 1024, 1024 * 1024


# --------------------------------------------------------------------------- the seed's cache
class SeedLRUCache:
    """Seed 000's LRUImageCache, per process, before or after its fix (kept faithful on purpose)."""

    def __init__(self, root: str, max_bytes: int, fixed: bool) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_size_bytes = max_bytes
        self.target_size_bytes = int(max_bytes * 0.90) if fixed else max_bytes
        self.fixed = fixed
        self.lock = threading.Lock()  # a thread lock: nothing between processes
        self.files: OrderedDict[str, int] = OrderedDict()
        self.current_size_bytes = 0
        for f in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            size = f.stat().st_size
            self.files[f.name] = size
            self.current_size_bytes += size
        if fixed and self.current_size_bytes > self.max_size_bytes:
            self._evict_lru()

    def _evict_lru(self) -> None:
        while self.current_size_bytes > self.target_size_bytes and self.files:
            name, size = self.files.popitem(last=False)
            try:
                (self.root / name).unlink()
            except FileNotFoundError:
                pass
            self.current_size_bytes -= size

    def put(self, key: str, data: bytes) -> None:
        size = len(data)
        path = self.root / key
        with self.lock:
            if self.fixed:
                projected = self.current_size_bytes + size
                if self.current_size_bytes > self.target_size_bytes or projected > self.target_size_bytes:
                    self._evict_lru()
                path.write_bytes(data)
                self.files[key] = size
                self.current_size_bytes += size
            else:
                path.write_bytes(data)
                self.files[key] = size
                self.current_size_bytes += size
                self._evict_lru()

    def get(self, key: str) -> bytes | None:
        try:
            data = (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        with self.lock:
            if key in self.files:
                self.files.move_to_end(key)
        return data


class Floor:
    """The minimal bounded writer: reserve under an flock'ed shared counter, evict oldest, write.

    State file: [used bytes: int64][next log offset to evict: int64]; a log of "name size\n"
    lines appended under the same lock gives the oldest files in order.
    """

    def __init__(self, root: str, max_bytes: int) -> None:
        import xxhash

        self._xxh = xxhash.xxh3_64_hexdigest
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.max = max_bytes
        self.target = int(max_bytes * 0.9)
        self.fd = os.open(os.path.join(root, ".floor.state"), os.O_RDWR | os.O_CREAT, 0o644)
        self.log = os.open(os.path.join(root, ".floor.log"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    def put(self, key: str, data: bytes) -> None:
        import fcntl
        import struct

        size = -(-len(data) // 4096) * 4096
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(self.fd, 16, 0)
            used, head = struct.unpack("<qq", raw) if len(raw) == 16 else (0, 0)
            if used + size > self.max:
                chunk = os.pread(self.log, 1 << 20, head)
                pos = 0
                while used + size > self.target and pos < len(chunk):
                    nl = chunk.find(b"\n", pos)
                    if nl < 0:
                        break
                    name, n = chunk[pos:nl].split(b" ")
                    try:
                        os.unlink(os.path.join(self.root, name.decode()))
                    except FileNotFoundError:
                        pass
                    used -= int(n)
                    pos = nl + 1
                head += pos
            used += size
            os.write(self.log, f"{key} {size}\n".encode())
            os.pwrite(self.fd, struct.pack("<qq", used, head), 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self._xxh(data)
        with open(os.path.join(self.root, key), "wb") as fh:
            fh.write(data)

    def get(self, key: str) -> bytes | None:
        try:
            with open(os.path.join(self.root, key), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.log)


class Plain:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        (self.root / key).write_bytes(data)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None


def open_contender(name: str, root: str, max_bytes: int):
    if name == "cachewatch":
        from cachewatch.engine import Cache

        c = Cache(root, max_size=max_bytes, sweep=False)
        c._mutex.hold_ns = []  # record each hold of the reservation mutex (benchmark only)
        c._index_mutex.hold_ns = []  # and of the index lock (batch commits, eviction transactions)
        _HOLDS.append(c._mutex.hold_ns)
        _INDEX_HOLDS.append(c._index_mutex.hold_ns)
        return c.put, c.read, c.close
    if name == "floor":
        f = Floor(root, max_bytes)
        return f.put, f.get, f.close
    if name == "diskcache":
        import diskcache

        c = diskcache.Cache(root, size_limit=max_bytes)
        return c.set, c.get, c.close
    if name in ("seed-before", "seed-after"):
        c = SeedLRUCache(root, max_bytes, fixed=name == "seed-after")
        return c.put, c.get, (lambda: None)
    c = Plain(root)
    return c.put, c.get, (lambda: None)


# ------------------------------------------------------------------------------ the workload
_HOLDS: list[list[int]] = []
_INDEX_HOLDS: list[list[int]] = []


def worker(name: str, root: str, max_bytes: int, idx: int, n_puts: int, sizes: list[int], n_gets: int,
           all_keys: int, n_procs: int, start, put_done, get_start, out) -> None:
    put, get, close = open_contender(name, root, max_bytes)
    holds = _HOLDS[-1] if (_HOLDS and name == "cachewatch") else None
    rng = random.Random(idx)
    pool = rng.randbytes(1 * MiB)
    start.wait()
    t0 = time.perf_counter()
    c0 = time.process_time()  # this process's CPU (all its threads): steadier than rates on a busy machine
    written = 0
    for i in range(n_puts):
        size = sizes[i]
        off = rng.randrange(0, len(pool) - size + 1)
        key = f"w{idx}-{i}.bin"
        put(key, key.encode().ljust(32, b"_") + pool[off : off + size - 32])
        written += size
    t_put = time.perf_counter() - t0
    cpu_put = time.process_time() - c0
    put_holds = list(holds) if holds is not None else []
    index_holds = list(_INDEX_HOLDS[-1]) if holds is not None else []
    put_done.wait()
    get_start.wait()
    hits = 0
    t0 = time.perf_counter()
    for _ in range(n_gets):
        w = rng.randrange(n_procs)
        data = get(f"w{w}-{rng.randrange(all_keys)}.bin")
        if data is not None:
            hits += 1
    t_get = time.perf_counter() - t0
    close()
    out.put({"put_s": t_put, "cpu_put_s": cpu_put, "written": written, "get_s": t_get, "gets": n_gets, "hits": hits,
             "holds_ns": put_holds[:: max(1, len(put_holds) // 2000)], "n_holds": len(put_holds), "n_puts": n_puts,
             "index_holds_ns": index_holds[:: max(1, len(index_holds) // 2000)]})


def walk_bytes(root: Path, exclude: tuple[str, ...]) -> int:
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.startswith(exclude):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            if st.st_ino in seen:  # a file renamed during the walk is counted once
                continue
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def sampler(mount: str, root: str, exclude: tuple[str, ...], stop, out) -> None:
    base = _fs_used(mount)
    peak_fs = peak_walk = samples = 0
    while not stop.is_set():
        peak_fs = max(peak_fs, _fs_used(mount) - base)
        peak_walk = max(peak_walk, walk_bytes(Path(root), exclude))
        samples += 1
        time.sleep(0.002)
    final_fs = _fs_used(mount) - base
    out.put({"peak_fs": peak_fs, "peak_walk": peak_walk, "samples": samples, "final_fs": final_fs,
             "final_walk": walk_bytes(Path(root), exclude)})


def _fs_used(mount: str) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


EXCLUDE = {
    "cachewatch": ("index.sqlite", "index.lock", "events.jsonl", "lock", "reserve", "sweep.lock"),
    "diskcache": ("cache.db",),
    "floor": (".floor.",),
}


def run_one(name: str, n_procs: int, factor: int, max_bytes: int, n_gets: int, fs: str = "tmpfs", disk_dir: str = "/var/tmp") -> dict:
    if fs == "tmpfs":
        mount = tempfile.mkdtemp(prefix="cwbench-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={max(64 * factor, 2048) * MiB}", "tmpfs", mount], check=True)
    else:
        mount = tempfile.mkdtemp(prefix="cwbench-", dir=disk_dir)
    try:
        root = os.path.join(mount, "cache")
        ctx = mp.get_context("fork")
        rng = random.Random(1)
        total = factor * max_bytes
        per_proc: list[list[int]] = []
        for _ in range(n_procs):
            sizes, acc = [], 0
            while acc < total // n_procs:
                s = rng.randint(64 * KiB, 512 * KiB)
                sizes.append(s)
                acc += s
            per_proc.append(sizes)
        n_keys = min(len(s) for s in per_proc)
        if name in ("cachewatch", "diskcache"):
            _, _, close = open_contender(name, root, max_bytes)  # create it before the workers race
            close()
        start, put_done, get_start = ctx.Barrier(n_procs + 1), ctx.Barrier(n_procs + 1), ctx.Barrier(n_procs + 1)
        out, sout, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [
            ctx.Process(target=worker, args=(name, root, max_bytes, i, len(per_proc[i]), per_proc[i], n_gets,
                                             n_keys, n_procs, start, put_done, get_start, out))
            for i in range(n_procs)
        ]
        for p in procs:
            p.start()
        samp = ctx.Process(target=sampler, args=(mount, root, EXCLUDE.get(name, ("\0",)), stop, sout))
        samp.start()
        time.sleep(0.2)
        t0 = time.perf_counter()
        start.wait()
        put_done.wait()
        put_wall = time.perf_counter() - t0
        stop.set()
        s = sout.get(timeout=120)
        samp.join()
        t0 = time.perf_counter()
        get_start.wait()
        results = [out.get(timeout=600) for _ in procs]
        get_wall = time.perf_counter() - t0
        for p in procs:
            p.join()
        written = sum(r["written"] for r in results)
        gets = sum(r["gets"] for r in results)
        holds = sorted(h for r in results for h in r["holds_ns"])
        n_holds, n_puts = sum(r["n_holds"] for r in results), sum(r["n_puts"] for r in results)
        iholds = sorted(h for r in results for h in r["index_holds_ns"])
        if fs != "tmpfs":  # a shared filesystem: its used bytes move with other programs; the walk is exact enough
            s["peak_fs"], s["final_fs"] = s["peak_walk"], s["final_walk"]
        return {
            "contender": name, "fs": fs, "procs": n_procs, "factor": factor, "max_bytes": max_bytes,
            "hold_median_us": holds[len(holds) // 2] / 1000 if holds else None,
            "hold_p99_us": holds[min(len(holds) - 1, int(len(holds) * 0.99))] / 1000 if holds else None,
            "holds_per_put": n_holds / n_puts if holds else None,
            "index_hold_median_us": iholds[len(iholds) // 2] / 1000 if iholds else None,
            "index_hold_p99_us": iholds[min(len(iholds) - 1, int(len(iholds) * 0.99))] / 1000 if iholds else None,
            "peak_fs_over_max": s["peak_fs"] / max_bytes, "peak_walk_over_max": s["peak_walk"] / max_bytes,
            "final_fs_over_max": s["final_fs"] / max_bytes, "final_walk_over_max": s["final_walk"] / max_bytes,
            "samples": s["samples"], "puts_per_s": sum(len(x) for x in per_proc) / put_wall,
            "mb_per_s": written / put_wall / 1e6,
            "cpu_us_per_put": sum(r["cpu_put_s"] for r in results) / sum(len(x) for x in per_proc) * 1e6,
            "gets_per_s": gets / get_wall,
            "hit_rate": sum(r["hits"] for r in results) / gets,
        }
    finally:
        if fs == "tmpfs":
            subprocess.run(["umount", "-l", mount], check=False)
            os.rmdir(mount)
        else:
            import shutil

            shutil.rmtree(mount, ignore_errors=True)


# ---------------------------------------------------------------------- single-process figures
def get_latency(n: int = 3000) -> dict:
    """Median extra time of cache.get(key)+open+read and of cache.read(key) over a plain open+read."""
    from cachewatch.engine import Cache

    with tempfile.TemporaryDirectory() as d:
        cache = Cache(os.path.join(d, "c"), max_size="1GiB", sweep=False)
        keys = [f"k{i}" for i in range(500)]
        for k in keys:
            cache.put(k, os.urandom(64 * KiB))
        paths = [cache.get(k) for k in keys]

        def plain(i: int) -> None:
            with open(paths[i % 500], "rb") as fh:
                fh.read()

        def via_get(i: int) -> None:
            with open(cache.get(keys[i % 500]), "rb") as fh:
                fh.read()

        def via_read(i: int) -> None:
            cache.read(keys[i % 500])

        # Interleaved, one of each per round: on a shared machine the load changes within a
        # second, and three phases in a row would each see a different machine.
        fns = (("plain", plain), ("get", via_get), ("read", via_read))
        samples: dict[str, list[int]] = {name: [] for name, _ in fns}
        for i in range(n):
            for name, fn in fns:
                t = time.perf_counter_ns()
                fn(i)
                samples[name].append(time.perf_counter_ns() - t)
        timings = {name: statistics.median(v) / 1000 for name, v in samples.items()}
        cache.close()
    return {
        "plain_open_read_us": timings["plain"],
        "get_extra_us": timings["get"] - timings["plain"],
        "read_extra_us": timings["read"] - timings["plain"],
    }


def open_time(n_entries: int) -> dict:
    """Time to open a cache holding n_entries, next to `du -sb` of the same tree."""
    from cachewatch.engine import Cache

    with tempfile.TemporaryDirectory() as d:
        root = os.path.join(d, "c")
        with Cache(root, max_size="100GB", sweep=False) as cache:
            for i in range(n_entries):
                cache.put(f"img/{i:07d}.jpg", b"x" * 100)
        opens = []
        for _ in range(5):
            t = time.perf_counter()
            Cache(root, sweep=False).close()
            opens.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run(["du", "-sb", root], check=True, capture_output=True)
        du = time.perf_counter() - t
    return {"entries": n_entries, "open_s": statistics.median(opens), "du_sb_s": du}


def put_loop(name: str, root: str, n: int, max_bytes: int) -> None:
    """One process, ``n`` puts of 64-512 KiB (always the same values for the same ``n``)."""
    put, _get, close = open_contender(name, root, max_bytes)
    rng = random.Random(7)
    pool = rng.randbytes(1 * MiB)
    for i in range(n):
        put(f"k{i}.bin", pool[: rng.randint(64 * KiB, 512 * KiB)])
    close()


def _strace_counts(name: str, n: int, max_bytes: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        out = os.path.join(d, "strace.txt")
        subprocess.run(
            ["strace", "-f", "-c", "-o", out, sys.executable, os.path.abspath(__file__), "--put-loop",
             name, os.path.join(d, "c"), str(n), str(max_bytes)],
            check=True, capture_output=True,
        )
        counts: dict[str, int] = {}
        for line in Path(out).read_text().splitlines():
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[3].isdigit():
                counts[f[-1]] = int(f[3])
        return counts


def syscalls_per_put(name: str, n: int, max_bytes: int) -> dict:
    """System calls per put at steady state: (calls of W + n puts) - (calls of W puts), over n."""
    warm = max(200, 4 * max_bytes // (288 * KiB))  # the cache full and evicting before the counted puts
    a, b = _strace_counts(name, warm, max_bytes), _strace_counts(name, warm + n, max_bytes)
    per = {k: (b.get(k, 0) - a.get(k, 0)) / n for k in set(a) | set(b) if k != "total"}
    return {"contender": name, "puts": n, "per_put": b.get("total", 0) / n - a.get("total", 0) / n,
            "by_call": dict(sorted(((k, round(v, 2)) for k, v in per.items() if v >= 0.05), key=lambda kv: -kv[1]))}


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--put-loop":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        put_loop(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", default="1,4,12,16")
    ap.add_argument("--fs", default="tmpfs,disk", help="tmpfs, disk or both")
    ap.add_argument("--disk-dir", default="/var/tmp", help="where the disk runs write (default /var/tmp)")
    ap.add_argument("--factors", default="10,30")
    ap.add_argument("--max", default="64MiB")
    ap.add_argument("--gets", type=int, default=300, help="gets per process")
    ap.add_argument("--contenders", default="cachewatch,floor,plain,diskcache,seed-before,seed-after")
    ap.add_argument("--open-entries", type=int, default=144_000, help="0 to skip the open-time measure")
    ap.add_argument("--syscalls", type=int, default=0, metavar="N",
                    help="also count system calls per put (strace -f -c, one process, N puts); 0: no")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cachewatch.engine.sizes import parse_size

    max_bytes = parse_size(args.max)
    rows = []
    for fs in args.fs.split(","):
        for n in [int(x) for x in args.procs.split(",")]:
            for f in [int(x) for x in args.factors.split(",")]:
                for name in args.contenders.split(","):
                    r = run_one(name, n, f, max_bytes, args.gets, fs, args.disk_dir)
                    rows.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)

    def same(x: dict, r: dict, who: str) -> bool:
        return x["contender"] == who and x["fs"] == r["fs"] and x["procs"] == r["procs"] and x["factor"] == r["factor"]

    print("\n| fs | procs | written | contender | peak fs/max | peak walk/max | puts/s | MB/s | vs plain | vs floor | CPU/put (us) | CPU/put vs floor | mutex hold median / p99 (us) | holds/put | index lock median / p99 (us) | gets/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        plain = next((x for x in rows if same(x, r, "plain")), None)
        floor = next((x for x in rows if same(x, r, "floor")), None)
        ratio = f"{r['mb_per_s'] / plain['mb_per_s']:.2f}x" if plain else "-"
        fratio = f"{r['mb_per_s'] / floor['mb_per_s']:.2f}x" if floor else "-"
        hold = f"{r['hold_median_us']:.1f} / {r['hold_p99_us']:.0f}" if r.get("hold_median_us") is not None else "-"
        hpp = f"{r['holds_per_put']:.2f}" if r.get("holds_per_put") is not None else "-"
        cpu = f"{r['cpu_us_per_put']:.0f}"
        fcpu = f"{r['cpu_us_per_put'] / floor['cpu_us_per_put']:.2f}x" if floor else "-"
        ihold = f"{r['index_hold_median_us']:.1f} / {r['index_hold_p99_us']:.0f}" if r.get("index_hold_median_us") is not None else "-"
        print(f"| {r['fs']} | {r['procs']} | {r['factor']}x | {r['contender']} | {r['peak_fs_over_max']:.2f} | {r['peak_walk_over_max']:.2f} | "
              f"{r['puts_per_s']:.0f} | {r['mb_per_s']:.0f} | {ratio} | {fratio} | {cpu} | {fcpu} | {hold} | {hpp} | {ihold} | {r['gets_per_s']:.0f} |")
    lat = get_latency()
    print(f"\nget of a hit, median extra over plain open+read ({lat['plain_open_read_us']:.1f} us): "
          f"get()+open+read +{lat['get_extra_us']:.1f} us, read() +{lat['read_extra_us']:.1f} us")
    result = {"rows": rows, "get_latency": lat}
    if args.open_entries:
        o = open_time(args.open_entries)
        print(f"open a cache of {o['entries']} entries: {o['open_s'] * 1000:.0f} ms (du -sb of the same tree: {o['du_sb_s'] * 1000:.0f} ms)")
        result["open"] = o
    if args.syscalls:
        result["syscalls"] = []
        print("\n| contender | system calls per put (strace -f -c, one process, full cache) | most frequent |")
        print("|---|---|---|")
        for name in args.contenders.split(","):
            if name in ("cachewatch", "floor", "plain"):
                sc = syscalls_per_put(name, args.syscalls, max_bytes)
                result["syscalls"].append(sc)
                top = ", ".join(f"{k} {v:g}" for k, v in list(sc["by_call"].items())[:8])
                print(f"| {name} | {sc['per_put']:.1f} | {top} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
