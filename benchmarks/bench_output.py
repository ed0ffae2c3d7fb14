"""What a \\r progress flood costs on its way into the training log, and how big the log gets.

A writer process draws a tqdm-like bar (about 110 bytes a redraw) ``--rate`` times a second
for ``--seconds``. Contenders, one after another in one run:

* ``direct``   -- before the output pump: the training writes straight into training.log;
                  the engine tails the file and parses what is new every 50 ms (real
                  ``FileTail`` + ``ProgressFeed``, with the engine's 256 KiB parse window)
* ``cat``      -- the training piped into a plain ``cat > training.log`` (no parsing at all)
* ``pump-tty`` -- cachewatch now: the training on a pty, the output pump collapses redraws;
                  the engine tails and parses the collapsed log as before
* ``pump-pipe``-- the same with ``[run] tty = false``

CPU is measured per process from /proc over the steady part of the run (from 1 s after the
start to 0.5 s before the end), as a share of one core. "engine" is the tail+parse loop in
its own process, exactly as the engine runs it; "pump" is the pump (or cat).

A second scenario, ``--huge-lines``, writes 1 MB lines as fast as it can (the field report:
828 MB of log in 40 s) and reports the log growth.

Run:

    python benchmarks/bench_output.py                 # 10 s per contender at 10,000 redraws/s
    python benchmarks/bench_output.py --seconds 5 --rate 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent

WRITER = r"""
import os, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
total = int(rate * seconds)
t0 = time.monotonic()
i = 0
while i < total:
    # Paced in batches of 50 so the writer itself stays cheap.
    due = t0 + i / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    for _ in range(50):
        pct = 100 * i // total
        bar = '#' * (pct // 4)
        os.write(1, b'\r%3d%%|%-25s| %d/%d [00:01<00:02, 9876.54it/s, loss=0.1234]' % (pct, bar.encode(), i, total))
        i += 1
os.write(1, b'\ndone\n')
"""

HUGE = r"""
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
line = b'x' * 1_000_000 + b'\n'
while time.monotonic() < end:
    os.write(1, line)
"""


def consume(log: str, seconds: float) -> None:
    """The engine's log loop (engine.Engine._poll_files), alone in a process."""
    import codecs

    from cachewatch.engine.daemon.tail import FileTail
    from cachewatch.engine.training.feed import ProgressFeed

    window = 256 * 1024
    tail = FileTail(log)
    feed = ProgressFeed()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        parts, size = [], 0
        while True:
            _, data = tail.read_new()
            if not data:
                break
            parts.append(data)
            size += len(data)
            if size > 2 * window:
                joined = b"".join(parts)[-window:]
                parts, size = [joined], len(joined)
            if len(data) < 1024 * 1024:
                break
        if parts:
            data = b"".join(parts)
            if size > window:
                data = data[-window:]
                data = data[data.find(b"\n") + 1:]
                decoder.reset()
            feed.feed_output(decoder.decode(data))
        time.sleep(0.05)
    snap = feed.snapshot()
    print(json.dumps({"step": snap.step if hasattr(snap, "step") else None}), flush=True)


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.NoSuchProcess:
        return float("nan")


def run_one(name: str, writer_code: str, args: list[str], seconds: float, tmp: Path) -> dict:
    log = tmp / f"{name}.log"
    consumer = subprocess.Popen([sys.executable, __file__, "--consume", str(log), "--seconds", str(seconds + 1.0)],
                                stdout=subprocess.PIPE, text=True)
    measured: dict[str, psutil.Process] = {"engine": psutil.Process(consumer.pid)}
    writer_cmd = [sys.executable, "-c", writer_code, *args]
    sup = None
    if name == "direct":
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        writer = subprocess.Popen(writer_cmd, stdout=fd, stderr=fd)
        os.close(fd)
    elif name == "cat":
        with open(log, "ab") as out:
            cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out)
        writer = subprocess.Popen(writer_cmd, stdout=cat.stdin)
        cat.stdin.close()
        measured["pump"] = psutil.Process(cat.pid)
    else:
        from cachewatch.engine.training.supervisor import Supervisor

        sup = Supervisor(writer_cmd, log_path=log, tty=name == "pump-tty")
        sup.start()
        writer = None
        measured["pump"] = psutil.Process(sup._pump.pid)  # noqa: SLF001 - a benchmark may look inside
    wproc = psutil.Process(writer.pid if writer is not None else sup.pid)
    measured["writer"] = wproc
    time.sleep(1.0)
    t0 = time.monotonic()
    c0 = {k: _cpu(p) for k, p in measured.items()}
    s0 = log.stat().st_size
    time.sleep(max(0.5, seconds - 1.5))
    t1 = time.monotonic()
    c1 = {k: _cpu(p) for k, p in measured.items()}
    s1 = log.stat().st_size
    if writer is not None:
        writer.wait()
    else:
        sup.wait(60)
    consumer.wait()
    if name == "cat":
        cat.wait()
    dt = t1 - t0
    res = {"contender": name, "seconds": round(dt, 2)}
    for k in measured:
        res[f"{k}_core_pct"] = round(100 * (c1[k] - c0[k]) / dt, 2)
    res["log_bytes_per_s"] = round((s1 - s0) / dt)
    res["log_gb_per_hour"] = round((s1 - s0) / dt * 3600 / 1e9, 3)
    res["log_bytes"] = log.stat().st_size
    cost = res["engine_core_pct"] + res.get("pump_core_pct", 0.0)
    res["engine_plus_pump_core_pct"] = round(cost, 2)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10000.0, help="redraws a second")
    ap.add_argument("--seconds", type=float, default=10.0, help="per contender")
    ap.add_argument("--huge-seconds", type=float, default=5.0, help="the 1 MB-line scenario (0: skip)")
    ap.add_argument("--consume", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.consume:
        consume(args.consume, args.seconds)
        return 0
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in ("direct", "cat", "pump-tty", "pump-pipe"):
            r = run_one(name, WRITER, [str(args.rate), str(args.seconds)], args.seconds, tmp)
            r["scenario"] = f"{args.rate:g} redraws/s"
            results.append(r)
            print(json.dumps(r), flush=True)
        if args.huge_seconds > 0:
            for name in ("direct", "pump-tty"):
                r = run_one(name, HUGE, [str(args.huge_seconds)], args.huge_seconds, tmp)
                r["scenario"] = "1 MB lines"
                results.append(r)
                print(json.dumps(r), flush=True)
    print()
    print("| scenario | contender | writer % core | pump % core | engine % core | engine+pump | log growth |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        pump = f"{r['pump_core_pct']:.2f}" if "pump_core_pct" in r else "-"
        print(f"| {r['scenario']} | {r['contender']} | {r['writer_core_pct']:.1f} | {pump} | {r['engine_core_pct']:.2f} | "
              f"**{r['engine_plus_pump_core_pct']:.2f}** | {r['log_bytes_per_s'] / 1e6:.3f} MB/s ({r['log_gb_per_hour']:.2f} GB/h) |")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_output.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
