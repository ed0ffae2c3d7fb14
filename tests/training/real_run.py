"""Run a real training script and feed its output, as it arrives, to a real ProgressFeed.

Used by the tests that drive the real libraries (transformers, Lightning, Keras, tqdm) and by
``benchmarks/bench_eta.py``. ``pty=True`` gives the script a pseudo-terminal, as the
supervisor does, so Rich and Keras draw what they draw for a person at a terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty as _pty
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

from cachewatch.engine.training import ProgressFeed, ProgressSnapshot

TRAINERS = Path(__file__).resolve().parent / "trainers"


@dataclass
class RealRun:
    feed: ProgressFeed
    started: float
    ended: float
    output: bytes
    returncode: int
    snapshots: list[tuple[float, ProgressSnapshot]] = field(default_factory=list)

    def final(self) -> ProgressSnapshot:
        return self.feed.snapshot(self.ended)


def run_trainer(script: str, *args: str, pty: bool = False, env: dict[str, str] | None = None,
                timeout_s: float = 240.0, sample_every_s: float = 0.0, on_chunk=None, check: bool = True,
                outcome: str | None = None) -> RealRun:
    """Run ``trainers/<script>`` with ``args``; every chunk of output goes to the feed at its arrival time."""
    argv = [sys.executable, str(TRAINERS / script), *args]
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", KERAS_BACKEND="torch", HF_HUB_OFFLINE="1",
                    TRANSFORMERS_OFFLINE="1", COLUMNS="120", **(env or {}))
    started = time.time()
    feed = ProgressFeed(started_time=started)
    if pty:
        full_env.setdefault("TERM", "xterm-256color")
        if full_env["TERM"] in ("", "dumb"):
            full_env["TERM"] = "xterm-256color"  # Rich draws nothing live on a dumb terminal
        master, slave = _pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=full_env, close_fds=True)
        os.close(slave)
        fd = master
    else:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
    out = bytearray()
    snaps: list[tuple[float, ProgressSnapshot]] = []
    deadline = time.monotonic() + timeout_s
    next_sample = 0.0
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            now = time.time()
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the pty's EIO once the child is gone
                    data = b""
                if not data:
                    break
                out += data
                feed.feed_output(data, now)
                if on_chunk is not None:
                    on_chunk(feed, now, proc)
            if now >= next_sample:
                snaps.append((now, feed.snapshot(now)))
                next_sample = now + sample_every_s
        else:
            proc.kill()
            raise AssertionError(f"{script} ran past {timeout_s}s; output so far:\n{out[-3000:].decode(errors='replace')}")
        rc = proc.wait(timeout=30)
    finally:
        if pty:
            os.close(master)
    ended = time.time()
    feed.finish(ended, outcome or ("finished" if rc == 0 else "failed"))
    if check:
        assert rc == 0, out[-3000:].decode(errors="replace")
    return RealRun(feed, started, ended, bytes(out), rc, snaps)
