"""One bound across machines: the Redis-indexed cache with 3 "nodes" x 8 processes, side by side
with the SQLite-indexed cache (one node of 8 processes) and plain file writes (24 processes).

Contenders, in one run, each on a private tmpfs standing in for the shared storage:

* ``redis``  -- ``Cache(root, index="redis://...", node="nK")``: 3 node ids x 8 processes on one
               directory, one local redis-server (AOF, ``appendfsync everysec``, as docs/cache.md
               recommends). The nodes are processes of this machine with distinct node ids.
* ``sqlite`` -- ``Cache(root)``: the machine-local cache, one node of 8 processes (what it is for).
* ``plain``  -- open/write/close of a new file per put, 24 processes, no bound: the ceiling.

Every process puts new keys with values of ``--min-kib``..``--max-kib`` until, all together,
``--factor`` x max bytes are written. The peak real disk use comes from the SIGSTOP sampler of
the tests (tests/cache/workers.py ``FrozenSampler``): every ``--sample-ms`` it stops every
writer, walks the directory (entries and ``.part`` files, each inode once, 4 KiB blocks) while
nothing moves, and resumes them, so a reading above max is a real violation. The sampler stops
every contender alike; its pauses are part of every contender's wall time.

puts/s is the number of puts of all processes divided by the time from the common start signal
(after every process has opened its cache) to the last process's end.

Run (root, for the tmpfs mounts):

    python benchmarks/bench_redis_cache.py            # max 64 MiB, 10x written, 2 trials (about 30 s)
    python benchmarks/bench_redis_cache.py --quick    # max 32 MiB, 10x written, 1 trial (about 20 s)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cache.workers import FrozenSampler, on_disk_bytes  # noqa: E402
from tests.fleet.redis_server import RedisServer  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
BLOCK = 4096  # tmpfs


def worker(kind: str, root: str, opts: dict, idx: int, budget_bytes: int, min_b: int, max_b: int, ready, go, out) -> None:
    from cachewatch.engine import Cache
    from cachewatch.engine.errors import CacheBusy, CacheError

    rng = random.Random(idx)
    blob = os.urandom(max_b + 4096)
    cache = None
    if kind == "redis":
        cache = Cache(root, **opts)
    elif kind == "sqlite":
        cache = Cache(root)
    ready.put(idx)
    go.wait()
    t0 = time.time()
    cpu0 = time.process_time()
    puts = written = busy = errors = 0
    error_msgs: list[str] = []
    while written < budget_bytes:
        n = rng.randint(min_b, max_b)
        off = rng.randrange(4096)
        data = memoryview(blob)[off:off + n]
        key = f"w{idx}-{puts}"
        if cache is None:
            shard = os.path.join(root, f"{(idx * 7919 + puts) % 256:02x}")
            with open(os.path.join(shard, key), "wb") as f:
                f.write(data)
        else:
            try:
                cache.put(key, data)
            except CacheBusy:
                busy += 1
                continue
            except CacheError as exc:
                errors += 1
                if len(error_msgs) < 3:
                    error_msgs.append(f"{type(exc).__name__}: {exc}")
                continue
        puts += 1
        written += n
    t1 = time.time()
    cpu = time.process_time() - cpu0
    if cache is not None:
        cache.close()
    out.put({"idx": idx, "puts": puts, "written": written, "busy": busy, "errors": errors, "error_msgs": error_msgs, "t0": t0, "t1": t1, "cpu_s": cpu})


def run_one(kind: str, nodes: int, per_node: int, max_bytes: int, factor: float, min_b: int, max_b: int,
            sample_s: float, redis_url: str | None) -> dict:
    from cachewatch.engine import Cache

    n_procs = nodes * per_node
    mount = tempfile.mkdtemp(prefix="cwbench-redis-")
    size = int(max_bytes * (factor + 2)) if kind == "plain" else max_bytes * 4
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", mount], check=True)
    try:
        root = os.path.join(mount, "cache")
        if kind == "plain":
            os.makedirs(root)
            for i in range(256):
                os.mkdir(os.path.join(root, f"{i:02x}"))
        elif kind == "redis":
            assert redis_url
            Cache(root, max_size=max_bytes, index=redis_url, node="bench").close()
        else:
            Cache(root, max_size=max_bytes).close()
        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        budget = int(max_bytes * factor / n_procs)
        procs = []
        for i in range(n_procs):
            opts = {"index": redis_url, "node": f"n{i // per_node + 1}"} if kind == "redis" else {}
            p = ctx.Process(target=worker, args=(kind, root, opts, i, budget, min_b, max_b, ready, go, out), daemon=True)
            p.start()
            procs.append(p)
        for _ in procs:
            ready.get(timeout=300)
        sampler = FrozenSampler(Path(root), [p.pid for p in procs], BLOCK, max_bytes, interval_s=sample_s).start()
        go.set()
        results = [out.get(timeout=900) for _ in procs]
        sampler.stop()
        for p in procs:
            p.join(60)
        final, _ = on_disk_bytes(Path(root), BLOCK)
        nodes_seen: list[str] = []
        if kind == "redis":  # the index's own record of the nodes that wrote (a node is recorded when it reserves)
            with Cache(root, index=redis_url, node="bench") as c:
                nodes_seen = list(c.stats().nodes)
        puts = sum(r["puts"] for r in results)
        wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
        return {
            "contender": kind,
            "nodes": nodes,
            "procs": n_procs,
            "max_bytes": max_bytes,
            "written_x_max": sum(r["written"] for r in results) / max_bytes,
            "puts": puts,
            "wall_s": wall,
            "puts_per_s": puts / wall,
            "cpu_us_per_put": sum(r["cpu_s"] for r in results) / puts * 1e6,
            "busy": sum(r["busy"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "error_msgs": [m for r in results for m in r["error_msgs"]][:5],
            "peak_over_max": sampler.peak / max_bytes,
            "final_over_max": final / max_bytes,
            "samples": sampler.samples,
            "violations": len(sampler.violations),
            "nodes_seen": nodes_seen,
        }
    finally:
        subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="max 32 MiB, one trial (about 20 s)")
    ap.add_argument("--max", default=None, help="max_size (default 64MiB, 32MiB with --quick)")
    ap.add_argument("--factor", type=float, default=10.0, help="bytes written in all, as a multiple of max")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--per-node", type=int, default=8, help="processes per node")
    ap.add_argument("--sqlite-procs", type=int, default=8)
    ap.add_argument("--min-kib", type=int, default=64)
    ap.add_argument("--max-kib", type=int, default=512)
    ap.add_argument("--sample-ms", type=float, default=50.0, help="frozen-sample interval")
    ap.add_argument("--trials", type=int, default=None, help="runs of every contender (default 2, 1 with --quick)")
    ap.add_argument("--contenders", default="redis,sqlite,plain")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_redis_cache: needs root for the private tmpfs mounts")

    from cachewatch.engine.sizes import parse_size

    max_bytes = parse_size(args.max or ("32MiB" if args.quick else "64MiB"))
    trials = args.trials or (1 if args.quick else 2)
    kinds = [k.strip() for k in args.contenders.split(",") if k.strip()]
    rdir = Path(tempfile.mkdtemp(prefix="cwbench-redis-srv-"))
    server = RedisServer(rdir, extra=("--appendonly", "yes", "--appendfsync", "everysec")).start() if "redis" in kinds else None
    rows = []
    try:
        for t in range(trials):
            for kind in kinds:
                if kind == "redis":
                    nodes, per = args.nodes, args.per_node
                elif kind == "sqlite":
                    nodes, per = 1, args.sqlite_procs
                else:
                    nodes, per = 1, args.nodes * args.per_node
                r = run_one(kind, nodes, per, max_bytes, args.factor, args.min_kib * KiB, args.max_kib * KiB,
                            args.sample_ms / 1000, server.url if server else None)
                r["trial"] = t + 1
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    finally:
        if server:
            server.stop()
        shutil.rmtree(rdir, ignore_errors=True)

    names = {"redis": "Redis-indexed", "sqlite": "SQLite-indexed", "plain": "plain file writes"}
    print(f"\nmax {max_bytes // MiB} MiB, {args.factor:g}x written, values {args.min_kib}-{args.max_kib} KiB, "
          f"frozen samples every {args.sample_ms:g} ms, tmpfs\n")
    print("| trial | contender | nodes x procs | written | puts | puts/s | vs SQLite | vs plain | CPU/put | peak/max | final/max | samples | violations | failed puts |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = {x["contender"]: x for x in rows if x["trial"] == r["trial"]}
        vs = lambda k: f"{r['puts_per_s'] / same[k]['puts_per_s']:.2f}x" if k in same else "-"  # noqa: E731
        print(f"| {r['trial']} | {names[r['contender']]} | {r['nodes']} x {r['procs'] // r['nodes']} | {r['written_x_max']:.1f}x "
              f"| {r['puts']} | {r['puts_per_s']:.0f} | {vs('sqlite')} | {vs('plain')} | {r['cpu_us_per_put']:.0f} us "
              f"| **{r['peak_over_max']:.3f}** | {r['final_over_max']:.2f} | {r['samples']} | {r['violations']} | {r['busy'] + r['errors']} |")
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    for r in rows:
        if r["nodes_seen"]:
            print(f"trial {r['trial']} {r['contender']}: nodes in the index: {', '.join(r['nodes_seen'])}")
        if r["error_msgs"]:
            print(f"trial {r['trial']} {r['contender']}: {r['errors']} puts failed, e.g. {r['error_msgs'][0]}")
    (out_dir / f"redis_cache-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
