#!/usr/bin/env python3
"""A small real training that reads its data through the managed cache.

A CNN learns to classify synthetic images. Making an image stands for the expensive
preprocessing of a real pipeline (decode, resize, augment; ``--prep-ms`` makes it slower);
``CachedDataset`` stores each item once, and every DataLoader worker, in every epoch,
reads it back from the cache. Progress goes to cachewatch through the reporting API and
is also printed (``Epoch 1/3 step 20/50 loss 0.6931``), so output parsing sees it too.

Run it under the supervisor:

    cachewatch run --headless -- python examples/train_cached.py --epochs 3 --workers 2

The cache is ``--cache-dir`` (with ``--max-size``), else ``[cache]`` of the config that
``cachewatch run`` passes on (``CACHEWATCH_CONFIG``), else a temporary directory.
Everything runs on the CPU; nothing here initialises CUDA unless ``--device cuda``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cachewatch.engine import Cache, load_config
from cachewatch.engine.torch import CachedDataset

try:  # the reporting API (engine/training/report.py)
    from cachewatch.engine import report
except ImportError:  # pragma: no cover - an engine build without it: printed progress only
    report = None  # type: ignore[assignment]

N_CLASSES = 10


class SyntheticImages(Dataset):
    """Item ``i`` is a (3, size, size) image and its label, the same every time it is made."""

    def __init__(self, n: int, size: int, prep_ms: float, seed: int) -> None:
        self.n, self.size, self.prep_s, self.seed = n, size, prep_ms / 1000.0, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng(self.seed * 1_000_003 + index)
        label = int(rng.integers(N_CLASSES))
        image = rng.standard_normal((3, self.size, self.size)).astype(np.float32)
        # A class-dependent pattern, so there is something to learn and the loss goes down.
        image[label % 3] += 0.5 + 0.1 * label
        if self.prep_s:
            time.sleep(self.prep_s)  # the cost the cache saves from the second epoch on
        return torch.from_numpy(image), label


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(32 * 4 * 4, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def open_cache(args: argparse.Namespace) -> Cache:
    if args.cache_dir:
        return Cache(args.cache_dir, max_size=args.max_size)
    cfg = load_config()
    if cfg.cache.root is not None and cfg.cache.max_size is not None:
        return Cache.from_config(cfg)
    return Cache(Path(tempfile.mkdtemp(prefix="train-cached-")), max_size=args.max_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=50, help="batches per epoch")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--items", type=int, default=None, help="dataset size (default: steps x batch size)")
    p.add_argument("--prep-ms", type=float, default=2.0, help="simulated preprocessing time per item")
    p.add_argument("--step-ms", type=float, default=0.0, help="extra time per step (to watch it slowly)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--max-size", default="200MB")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--print-every", type=int, default=5, help="print progress every N steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the DataLoader workers are the parallelism here
    items = args.items or args.steps * args.batch_size
    cache = open_cache(args)
    data = CachedDataset(SyntheticImages(items, args.image_size, args.prep_ms, args.seed), cache,
                         key=f"synthetic/s{args.image_size}-seed{args.seed}/{{index}}")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0, drop_last=False)
    model = SmallCNN().to(args.device)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    steps = min(args.steps, len(loader))
    print(f"training {sum(p.numel() for p in model.parameters())} parameters on {items} items, "
          f"{args.epochs} epochs x {steps} steps, {args.workers} workers, cache {cache.root}", flush=True)

    for epoch in range(1, args.epochs + 1):
        if report is not None:
            report.epoch_start(epoch, args.epochs, total_steps=steps)
        model.train()
        total = 0.0
        step = 0
        for step, (x, y) in enumerate(loader, start=1):
            x, y = x.to(args.device), y.to(args.device)
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            value = float(loss.item())
            total += value
            if args.step_ms:
                time.sleep(args.step_ms / 1000.0)
            if report is not None:
                report.progress(epoch=epoch, total_epochs=args.epochs, step=step, total_steps=steps, loss=value)
            if step % args.print_every == 0 or step == steps:
                print(f"Epoch {epoch}/{args.epochs} step {step}/{steps} loss {value:.4f}", flush=True)
            if step >= steps:
                break
        mean = total / max(1, step)
        if report is not None:
            report.epoch_end(epoch, args.epochs, loss=mean)
        if args.checkpoint_dir:
            path = Path(args.checkpoint_dir) / f"epoch{epoch}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
            if report is not None:
                report.checkpoint(path, epoch=epoch)
        print(f"epoch {epoch} done: mean loss {mean:.4f}; cache holds {cache.stats().entries} items", flush=True)
    cache.close()
    print("training finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
