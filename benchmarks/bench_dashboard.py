#!/usr/bin/env python3
"""The dashboard's cost: CPU share at the default refresh, and time to the first frame.

    python benchmarks/bench_dashboard.py [--seconds 60] [--size 160x48]

Starts ``cachewatch demo --headless`` (the example training through an 8 MB cache, evicting
every few seconds), then runs the real ``cachewatch attach demo`` in a pseudo-terminal of
the given size, reading (and discarding) everything it draws, as a terminal would. Reports:

* first frame: from the exec of ``cachewatch attach`` to the first drawn panel, and to the
  first frame with the engine's figures in it;
* CPU: the dashboard process's user+system time over ``--seconds`` (after a 5 s settle),
  as a percentage of one core; side by side, over the same window, what seed 000 ran by hand
  (``watch -n 1 du -sh CACHE``) and the engine process itself.

Targets (issue 6): first frame within 1.5 s; under 3 % of one core at the 1 s refresh.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import psutil


def spawn_in_pty(argv: list[str], env: dict[str, str], cols: int, rows: int) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execvpe(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return pid, fd


def drain(fd: int, seconds: float, until: bytes | None = None) -> tuple[bytes, float | None]:
    """Read what the program draws for ``seconds`` (or until ``until`` shows); return (tail, time seen)."""
    deadline = time.monotonic() + seconds
    tail = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        tail = (tail + data)[-200_000:]
        if until is not None and until in tail:
            return tail, time.monotonic()
    return tail, None


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--size", default="160x48")
    args = p.parse_args()
    cols, rows = (int(v) for v in args.size.split("x"))

    work = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    run = Path(tempfile.mkdtemp(prefix="cw-", dir="/tmp"))
    os.chmod(run, 0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), XDG_STATE_HOME=str(work / "state"), TERM="xterm-256color")
    cw = [sys.executable, "-m", "cachewatch.tui.cli"]
    demo = json.loads(subprocess.run([*cw, "demo", "--headless", "--json", "--dir", str(work)], env=env,
                                     capture_output=True, text=True, check=True).stdout)
    cache_root = str(Path(demo["demo_dir"]) / "cache")
    engine = psutil.Process(demo["pid"])
    watch_proc = None
    pid = fd = None
    try:
        time.sleep(8)  # the training imports torch and starts evicting
        t0 = time.monotonic()
        pid, fd = spawn_in_pty([*cw, "attach", "demo"], env, cols, rows)
        _, first_panel = drain(fd, 10, until=b"Training output")
        _, first_data = drain(fd, 10, until=b"/8.0 MB")
        drain(fd, 5)  # settle: imports done, first polls in
        dash = psutil.Process(pid)
        if shutil.which("watch") and shutil.which("du"):
            watch_proc = subprocess.Popen(["watch", "-n", "1", "du", "-sh", cache_root], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(env, TERM="dumb"))
            time.sleep(0.5)
        watch_ps = psutil.Process(watch_proc.pid) if watch_proc else None
        start = time.monotonic()
        c_dash, c_engine = cpu_s(dash), cpu_s(engine)
        c_watch = cpu_s(watch_ps) if watch_ps else 0.0
        drain(fd, args.seconds)
        wall = time.monotonic() - start
        d_dash = cpu_s(dash) - c_dash
        d_engine = cpu_s(engine) - c_engine
        d_watch = (cpu_s(watch_ps) - c_watch) if watch_ps else None
    finally:
        if watch_proc is not None:
            watch_proc.terminate()
            watch_proc.wait()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        if fd is not None:
            os.close(fd)
        subprocess.run([*cw, "stop", "demo", "--yes"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v / wall:.2f} %"

    print(f"dashboard {cols}x{rows}, refresh 1 s, {wall:.0f} s with the demo training running ({os.cpu_count()} cores)")
    print(f"  first frame (panels drawn)        {first_panel - t0:.2f} s" if first_panel else "  first frame: not seen")
    print(f"  first frame with engine figures   {first_data - t0:.2f} s" if first_data else "  first data frame: not seen")
    print(f"  CPU, dashboard                    {pct(d_dash)} of one core")
    print(f"  CPU, watch -n 1 du -sh CACHE      {pct(d_watch)} of one core (what seed 000 ran by hand)")
    print(f"  CPU, the engine (for context)     {pct(d_engine)} of one core")
    ok = bool(first_panel and first_panel - t0 <= 1.5 and d_dash / wall < 0.03)
    print("  targets (first frame <= 1.5 s, CPU < 3 %):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
