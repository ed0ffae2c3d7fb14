#!/usr/bin/env python3
"""A fleet of engines over one real redis-server: what it costs and how fast a dead engine shows.

    python benchmarks/bench_fleet.py [--engines 20] [--seconds 20] [--interval 1]

Starts a private ``redis-server`` on 127.0.0.1, then ``--engines`` real headless engines
(separate processes, each with its own runtime/state directory and a distinct ``[fleet] host``,
each supervising a small training that prints a line a second). Then:

* dashboard: the real ``cachewatch fleet`` (the Textual fleet screen, refreshed each second)
  in a pseudo-terminal of 160x48, its CPU over ``--seconds`` after a settle, as % of one core;
  beside it, the same loop without Textual (``FleetReader.read()`` each second in this
  process) and the number of Redis round trips per refresh;
* an engine's publishing: the thread CPU of one heartbeat (``FleetPublisher.beat``: TIME,
  snapshot summary, one pipeline) of a real in-process engine, times beats per second, as %
  of one core; and, as a cross-check, the whole-process CPU of the fleet engines against as
  many engines without ``[fleet]`` over the same window;
* lost: one engine killed -9, time until a reader (polling every 0.1 s) shows it lost, in
  intervals.

Targets (issue 13): dashboard under 3 % of a core with one pipelined Redis read per refresh;
publishing under 0.5 % of a core per engine; a killed engine shown lost within 3 intervals.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_dashboard import cpu_s, drain, spawn_in_pty  # noqa: E402

from tests.fleet.redis_server import RedisServer  # noqa: E402

TRAINING = [sys.executable, "-u", "-c", "import time\nwhile True: print('step', flush=True); time.sleep(1)"]


def start_engine(base: Path, host: str, url: str | None, interval: float) -> psutil.Process:
    run = base / "run" / host
    run.mkdir(parents=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWATCH_")}
    env.update(XDG_RUNTIME_DIR=str(run), XDG_STATE_HOME=str(base / "state" / host))
    if url:
        env.update(CACHEWATCH_FLEET_URL=url, CACHEWATCH_FLEET_HOST=host, CACHEWATCH_FLEET_INTERVAL=f"{interval}s")
    out = subprocess.run([sys.executable, "-m", "cachewatch.tui.cli", "run", "--headless", "--json", "--name", "train",
                          "--", *TRAINING], env=env, capture_output=True, text=True, cwd=base, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"engine {host} did not start: {out.stderr}")
    import json

    return psutil.Process(json.loads(out.stdout)["pid"])


def publisher_cost(url: str, interval: float, beats: int = 200) -> float:
    """Thread CPU seconds per heartbeat of a real engine (no training) in this process."""
    from cachewatch.engine.config import load_config
    from cachewatch.engine.daemon.engine import Engine
    from cachewatch.engine.fleet.connect import connect
    from cachewatch.engine.fleet.publisher import FleetPublisher

    cfg = load_config(None, env={"CACHEWATCH_FLEET_URL": url, "CACHEWATCH_FLEET_HOST": "bench-inproc"})
    tmp = Path(tempfile.mkdtemp(prefix="cwfb-"))
    engine = Engine(cfg, name="inproc", state_dir=tmp).start()
    try:
        time.sleep(1.5)  # the samplers have a first reading: the summary has GPU/host figures to carry
        pub = FleetPublisher(engine, cfg.fleet)
        r = connect(cfg.fleet)
        pub.beat(r)
        t0 = time.thread_time()
        for _ in range(beats):
            pub.beat(r)
        per_beat = (time.thread_time() - t0) / beats
        r.close()
        return per_beat
    finally:
        engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cwf-", dir="/tmp"))
    redis = RedisServer(base / "redis").start()
    procs: list[psutil.Process] = []
    plain: list[psutil.Process] = []
    try:
        t0 = time.monotonic()
        from concurrent.futures import ThreadPoolExecutor

        n_plain = min(3, args.engines)
        with ThreadPoolExecutor(4) as pool:  # start-up is import-bound; a few at once
            procs = list(pool.map(lambda i: start_engine(base, f"node-{i:02d}", redis.url, args.interval),
                                  range(args.engines)))
            plain = list(pool.map(lambda i: start_engine(base, f"plain-{i}", None, args.interval), range(n_plain)))
        print(f"{args.engines} fleet engines + {n_plain} without [fleet] started in {time.monotonic() - t0:.0f}s")

        from cachewatch.engine.config import load_config
        from cachewatch.engine.fleet.reader import FleetReader

        cfg = load_config(None, env={"CACHEWATCH_FLEET_URL": redis.url}).fleet
        reader = FleetReader(cfg)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = reader.read(complete=True)
            if sum(1 for r in view.rows if r.summary is not None) == args.engines:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("not every engine showed up in the fleet")

        # Dashboard: the real fleet screen in a pty, beside the same reads without Textual.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWATCH_")}
        env.update(TERM="xterm-256color", CACHEWATCH_FLEET_URL=redis.url)
        pid, fd = spawn_in_pty([sys.executable, "-m", "cachewatch.tui.cli", "fleet"], env, 160, 48)
        dash = psutil.Process(pid)
        drain(fd, 5.0)
        engine_cpu0 = [cpu_s(p) for p in procs]
        plain_cpu0 = [cpu_s(p) for p in plain]
        d0 = cpu_s(dash)
        w0 = time.monotonic()
        reads0, trips0 = 0, reader.round_trips
        cpu_reader0 = time.process_time()
        end = w0 + args.seconds
        while time.monotonic() < end:
            reader.read()
            reads0 += 1
            drain(fd, min(1.0, max(0.0, end - time.monotonic())))
        wall = time.monotonic() - w0
        dash_pct = 100 * (cpu_s(dash) - d0) / wall
        reader_pct = 100 * (time.process_time() - cpu_reader0) / wall
        trips = (reader.round_trips - trips0) / max(1, reads0)
        fleet_pct = 100 * sum(cpu_s(p) - c for p, c in zip(procs, engine_cpu0)) / len(procs) / wall
        plain_pct = 100 * sum(cpu_s(p) - c for p, c in zip(plain, plain_cpu0)) / len(plain) / wall
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)

        per_beat = publisher_cost(redis.url, args.interval)
        pub_pct = 100 * per_beat / args.interval

        # Lost: kill -9 one engine, poll until the reader says lost.
        victim = procs.pop()
        victim.kill()
        killed = time.monotonic()
        lost_s = None
        while time.monotonic() - killed < 10 * args.interval:
            view = reader.read()
            row = next((r for r in view.rows if r.id == f"node-{args.engines - 1:02d}/train"), None)
            if row is not None and row.lost:
                lost_s = time.monotonic() - killed
                break
            time.sleep(0.1)
        reader.close()

        print(f"\nfleet of {args.engines} engines, interval {args.interval:g}s, {wall:.0f}s measured")
        print(f"  dashboard (cachewatch fleet, Textual, 160x48): {dash_pct:.2f} % of a core")
        print(f"  the same reads without Textual:                {reader_pct:.2f} % of a core, "
              f"{trips:.2f} Redis round trips per refresh")
        print(f"  publishing, one engine: {per_beat * 1000:.2f} ms CPU per heartbeat = {pub_pct:.3f} % of a core")
        print(f"  whole engine process: {fleet_pct:.2f} % with [fleet], {plain_pct:.2f} % without "
              f"(difference {fleet_pct - plain_pct:+.2f} %, noisy)")
        print(f"  killed engine shown lost after {lost_s:.2f}s = {lost_s / args.interval:.2f} intervals"
              if lost_s is not None else "  killed engine NOT shown lost within 10 intervals")
        return 0
    finally:
        for p in procs + plain:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        psutil.wait_procs(procs + plain, timeout=15)
        for p in procs + plain:
            try:
                for c in p.children(recursive=True):
                    c.kill()
                p.kill()
            except psutil.Error:
                pass
        redis.stop()
        # Trainings of engines that were stopped gracefully are gone; any left are ours: kill by runtime dir.
        for p in psutil.process_iter():
            try:
                if p.environ().get("XDG_RUNTIME_DIR", "").startswith(str(base)):
                    p.kill()
            except (psutil.Error, OSError):
                pass
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
