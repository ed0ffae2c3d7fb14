"""verify's read-and-hash speed against plainly reading the same files, same run.

Target (issue 4): ``cachewatch verify`` reads and hashes at least 0.5x the speed of
plainly reading the same files.

A managed cache is filled with ``--size`` bytes in files of 1-32 MiB, then read from the
page cache (every file is read once first, so both sides read from memory, as the
issue's "xxh3 ~10 GB/s from the page cache" does). Contenders, each timed ``--repeat``
times, interleaved, median kept:

``plain-1``      one thread reading every entry file (4 MiB ``readinto``), no hashing
``plain-N``      N threads reading, no hashing (the fair comparison for verify with N)
``sha256-1``     one thread reading and hashing with SHA-256 (for scale)
``verify-N``     ``verify_cache(root, workers=N)``: index snapshot, read + xxh3_64 of every
                 entry, compare with the index, orphan scan, counters check

Run:

    python benchmarks/bench_verify.py                 # 4 GB
    python benchmarks/bench_verify.py --size 200MB    # quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cachewatch.engine import Cache  # noqa: E402
from cachewatch.engine.jobs import verify_cache  # noqa: E402
from cachewatch.engine.sizes import format_size, parse_size  # noqa: E402

CHUNK = 4 << 20


def fill(root: Path, total: int) -> list[Path]:
    rng_state = 1234567
    sizes = []
    left = total
    while left > 0:
        rng_state = (rng_state * 6364136223846793005 + 1442695040888963407) % 2**64
        s = min(left, (1 << 20) + rng_state % (31 << 20))
        sizes.append(s)
        left -= s
    block = os.urandom(32 << 20)
    with Cache(root, max_size=total * 2 + (1 << 30), sweep=False) as c:
        for i, s in enumerate(sizes):
            c.put(f"bench/{i:06d}.bin", block[:s])
        return [e.path for e in c.entries(order="key")]


def read_one(path: Path, buf: bytearray) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(buf)
            if not k:
                return n
            n += k


def plain(paths: list[Path], threads: int) -> int:
    if threads == 1:
        buf = bytearray(CHUNK)
        return sum(read_one(p, buf) for p in paths)
    import threading

    local = threading.local()

    def task(p: Path) -> int:
        b = getattr(local, "b", None)
        if b is None:
            b = local.b = bytearray(CHUNK)
        return read_one(p, b)

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(task, paths))


def sha256(paths: list[Path]) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    n = 0
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                h.update(view[:k])
                n += k
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4GB")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to put the cache (default: a temporary directory)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    total = parse_size(args.size)
    work = Path(args.dir or tempfile.mkdtemp(prefix="cw-bench-verify-"))
    root = work / "cache"
    t0 = time.perf_counter()
    paths = fill(root, total)
    print(f"cache: {root}, {len(paths)} files, {format_size(total)} (filled in {time.perf_counter() - t0:.0f}s); "
          f"{args.workers} workers", flush=True)
    plain(paths, 1)  # warm the page cache

    n = args.workers
    contenders = {
        "plain-1": lambda: plain(paths, 1),
        f"plain-{n}": lambda: plain(paths, n),
        "sha256-1": lambda: sha256(paths),
        f"verify-{n}": lambda: verify_cache(root, workers=n).bytes_checked,
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.repeat):
        for name, fn in contenders.items():
            t = time.perf_counter()
            got = fn()
            times[name].append(time.perf_counter() - t)
            if got != total:
                raise SystemExit(f"{name} read {got} bytes, expected {total}")
    rate = {k: total / statistics.median(v) for k, v in times.items()}
    for k, r in rate.items():
        print(f"{k:<12} {r / 1e9:6.2f} GB/s   (median of {args.repeat}: {statistics.median(times[k]):.2f}s)")
    v = rate[f"verify-{n}"]
    print()
    print(f"verify-{n} / plain-{n} = {v / rate[f'plain-{n}']:.2f}")
    print(f"verify-{n} / plain-1 = {v / rate['plain-1']:.2f}")
    ok = v >= 0.5 * rate[f"plain-{n}"]
    print(f"target verify >= 0.5 x plain read (same threads): {'met' if ok else 'NOT met'}")
    if args.json:
        print(json.dumps({"bytes": total, "files": len(paths), "workers": n, "gb_per_s": {k: r / 1e9 for k, r in rate.items()}}))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
