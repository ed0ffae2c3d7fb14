"""Nested tqdm bars, the inner one with leave=False (it ends at 348/350 on screen).

    python tqdm_nested.py [--epochs 3] [--steps 50] [--sleep 0.01]
"""
import argparse
import time

from tqdm import tqdm

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--sleep", type=float, default=0.01)
args = ap.parse_args()
for epoch in tqdm(range(args.epochs), desc="Epochs", position=0):
    for step in tqdm(range(args.steps), desc=f"Epoch {epoch}", position=1, leave=False):
        time.sleep(args.sleep)
print("done", flush=True)
