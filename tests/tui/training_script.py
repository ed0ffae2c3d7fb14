"""A small training for dashboard tests: writes into the managed cache (so it evicts), prints
progress lines the engine parses, and on request a real CUDA OOM message as PyTorch prints it.

Run by a real engine: ``python training_script.py [--oom-after N] [--steps N]``; it reads the
cache from ``CACHEWATCH_CONFIG`` like any training under ``cachewatch run``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cachewatch.engine import Cache, load_config

OOM_TEXT = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 88, in <module>\n'
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity "
    "of 3.68 GiB of which 11.75 MiB is free. Including non-PyTorch memory, this process has 3.56 GiB memory "
    "in use. Of the allocated memory 3.40 GiB is allocated by PyTorch, and 95.23 MiB is reserved by PyTorch "
    "but unallocated.\n"
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--item-bytes", type=int, default=20_000)
    p.add_argument("--sleep", type=float, default=0.05)
    p.add_argument("--oom-after", type=int, default=0, help="print a CUDA OOM after N steps, then keep going")
    args = p.parse_args()
    cfg = load_config(os.environ.get("CACHEWATCH_CONFIG"))
    cache = Cache.from_config(cfg)
    n = 0
    for epoch in range(1, args.epochs + 1):
        for step in range(1, args.steps + 1):
            n += 1
            cache.put(f"item/{n % 400}", os.urandom(args.item_bytes))
            print(f"Epoch {epoch}/{args.epochs} step {step}/{args.steps} loss {1.0 / n:.4f}", flush=True)
            if args.oom_after and n == args.oom_after:
                sys.stderr.write(OOM_TEXT)
                sys.stderr.flush()
            time.sleep(args.sleep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
