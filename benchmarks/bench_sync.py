"""How fast is `cache pull` against a plain parallel boto3 download, and what does a repeat push cost?

One S3 endpoint for everything: moto's HTTP server in its own process on 127.0.0.1 (the
same server the tests use; boto3 talks HTTP to it). A cache of ``--files`` entries of
random bytes, ``--size`` in total, is pushed; then, each in a fresh child process, timed
around the transfer only (imports and start-up excluded):

* ``plain``    -- download the objects (their list given, not timed) with boto3 ``get_object`` on
                  ``--workers`` threads into files: no hashing, no cache, no index (the ceiling)
* ``pull``     -- ``cachewatch.engine.sync.pull`` into an empty cache with the same thread count:
                  xxh3 of every object checked against the manifest, stored through ``Cache.put``

Trials alternate plain/pull; the best of each is compared. Also measured: the first push,
a second push of the unchanged cache, and the children's peak RSS (memory must not grow
with the cache: objects stream, at most 2 x workers in flight).

    python benchmarks/bench_sync.py                                   # 1 GB in 10,000 files
    python benchmarks/bench_sync.py --size 256MB --files 2560 --trials 2   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    }


def _client():  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("s3", config=Config(max_pool_connections=64))


# ------------------------------------------------------------------------------------ children
def child_plain(url: str, dest: str, workers: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    client = _client()
    bucket, _, prefix = url[len("s3://"):].partition("/")
    keys: list[str] = []  # the list comes free to the baseline (pull reads a manifest instead)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/objects/"):
        keys.extend(o["Key"] for o in page.get("Contents", ()))
    os.makedirs(dest, exist_ok=True)
    t0 = time.perf_counter()

    def get(key: str) -> int:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        with open(os.path.join(dest, key.rsplit("/", 1)[-1]), "wb") as fh:
            fh.write(body)
        return len(body)

    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(get, keys))
    return {"seconds": time.perf_counter() - t0, "bytes": total, "files": len(keys)}


def child_pull(url: str, dest: str, workers: int) -> dict[str, float]:
    from cachewatch.engine.cache import Cache
    from cachewatch.engine.sync import open_remote, pull

    with Cache(dest, max_size="100GB", sweep=False) as cache:
        remote = open_remote(url, workers=workers)
        t0 = time.perf_counter()
        rep = pull(cache, remote, workers=workers)
        secs = time.perf_counter() - t0
    assert rep.ok and rep.files_transferred == rep.files_total, rep.summary()
    return {"seconds": secs, "bytes": rep.bytes_transferred, "files": rep.files_transferred}


def child_push(url: str, root: str, workers: int) -> dict[str, float]:
    from cachewatch.engine.cache import Cache
    from cachewatch.engine.sync import open_remote, push

    with Cache(root, sweep=False) as cache:
        remote = open_remote(url, workers=workers)
        t0 = time.perf_counter()
        rep = push(cache, remote, workers=workers)
        secs = time.perf_counter() - t0
    assert rep.ok, rep.summary()
    return {"seconds": secs, "bytes": rep.bytes_transferred, "files": rep.files_transferred}


def run_child(role: str, a: str, b: str, workers: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", role, a, b, str(workers)],
        env=dict(os.environ, **env), capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{role} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child_main(argv: list[str]) -> None:
    role, a, b, workers = argv[0], argv[1], argv[2], int(argv[3])
    result = {"plain": child_plain, "pull": child_pull, "push": child_push}[role](a, b, workers)
    result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GB", help="total bytes of the cache (default 1GB)")
    ap.add_argument("--files", type=int, default=10_000, help="number of entries (default 10,000)")
    ap.add_argument("--workers", type=int, default=16, help="threads for both contenders (default 16)")
    ap.add_argument("--trials", type=int, default=2, help="alternating plain/pull trials (default 2)")
    args = ap.parse_args()

    from cachewatch.engine.cache import Cache
    from cachewatch.engine.sizes import format_size, parse_size

    total = parse_size(args.size)
    per_file = total // args.files
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = _env(endpoint)
    os.environ.update(env)
    server = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, TMPDIR=str(work)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto server did not start")
                time.sleep(0.1)
        _client().create_bucket(Bucket="bench-bucket")
        url = "s3://bench-bucket/cache"

        src = work / "src"
        rnd = random.Random(1)
        with Cache(src, max_size=total * 2 + (1 << 30), sweep=False) as cache:
            for i in range(args.files):
                cache.put(f"train/{i % 100:02d}/item{i:06d}.npz", rnd.randbytes(per_file))
        print(f"cache: {args.files} files, {format_size(per_file * args.files, binary=False)}; endpoint {endpoint} (moto server)")

        first = run_child("push", url, str(src), args.workers, env)
        second = run_child("push", url, str(src), args.workers, env)
        print(f"push (first):     {first['seconds']:.2f} s  {format_size(first['bytes'] / first['seconds'], binary=False)}/s  "
              f"peak RSS {format_size(first['max_rss_bytes'], binary=False)}")
        print(f"push (unchanged): {second['seconds']:.2f} s  ({100 * second['seconds'] / first['seconds']:.2f} % of the first; "
              f"{int(second['files'])} files sent)")

        plains, pulls = [], []
        for t in range(args.trials):
            dest_p, dest_c = work / f"plain{t}", work / f"pull{t}"
            plains.append(run_child("plain", url, str(dest_p), args.workers, env))
            shutil.rmtree(dest_p, ignore_errors=True)
            pulls.append(run_child("pull", url, str(dest_c), args.workers, env))
            shutil.rmtree(dest_c, ignore_errors=True)
            print(f"trial {t + 1}: plain {plains[-1]['seconds']:.2f} s, pull {pulls[-1]['seconds']:.2f} s")
        bp = min(plains, key=lambda r: r["seconds"])
        bc = min(pulls, key=lambda r: r["seconds"])
        ratio = bp["seconds"] / bc["seconds"]
        result = {
            "files": args.files, "bytes": per_file * args.files, "workers": args.workers, "trials": args.trials,
            "plain_s": bp["seconds"], "pull_s": bc["seconds"], "pull_vs_plain": ratio,
            "push_first_s": first["seconds"], "push_unchanged_s": second["seconds"],
            "push_unchanged_pct": 100 * second["seconds"] / first["seconds"],
            "pull_peak_rss_bytes": max(r["max_rss_bytes"] for r in pulls),
            "plain_peak_rss_bytes": max(r["max_rss_bytes"] for r in plains),
            "push_peak_rss_bytes": first["max_rss_bytes"],
        }
        print(f"plain boto3 download: {bp['seconds']:.2f} s ({format_size(bp['bytes'] / bp['seconds'], binary=False)}/s), "
              f"peak RSS {format_size(result['plain_peak_rss_bytes'], binary=False)}")
        print(f"cachewatch pull:      {bc['seconds']:.2f} s ({format_size(bc['bytes'] / bc['seconds'], binary=False)}/s), "
              f"peak RSS {format_size(result['pull_peak_rss_bytes'], binary=False)}")
        print(f"pull speed vs plain: {ratio:.2f}x (target >= 0.7x: {'met' if ratio >= 0.7 else 'NOT met'}); "
              f"unchanged push {result['push_unchanged_pct']:.2f} % of the first (target < 5 %: "
              f"{'met' if result['push_unchanged_pct'] < 5 else 'NOT met'})")
        out_dir = HERE.parent / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / "sync.json").write_text(json.dumps(result, indent=2) + "\n")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
