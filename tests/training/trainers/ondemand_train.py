"""A training whose items go through a real managed cache, seed 004 style.

    python ondemand_train.py CACHE_ROOT [--epochs 3] [--items 40] [--compute 0.03] [--no-store]

Each step reads its item from the cache; a miss computes it (``--compute`` seconds, the
EDF preprocessing of the seed) and stores it unless ``--no-store`` (the seed's dataset
wrote to another directory than the one the cache manages, so every epoch missed again).
"""
import argparse
import time

from tqdm import tqdm

from cachewatch.engine.cache import Cache

ap = argparse.ArgumentParser()
ap.add_argument("root")
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--items", type=int, default=40)
ap.add_argument("--compute", type=float, default=0.03)
ap.add_argument("--step", type=float, default=0.005, help="seconds of model work per step")
ap.add_argument("--no-store", action="store_true")
args = ap.parse_args()

cache = Cache(args.root, flush_interval=0.1)
for epoch in range(1, args.epochs + 1):
    for i in tqdm(range(args.items), desc=f"Epoch {epoch}/{args.epochs}", mininterval=0):
        key = f"item/{i}"
        if cache.read(key) is None:
            time.sleep(args.compute)  # built on demand, during training
            if not args.no_store:
                cache.put(key, b"x" * 256)
        time.sleep(args.step)
cache.flush()
print("done", flush=True)
