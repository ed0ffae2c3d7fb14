"""A tiny real PyTorch Lightning run on CPU: synthetic data, no download.

    python lightning_train.py [--bar tqdm|rich] [--epochs 3] [--iterable] [--sleep 0.0] [--steps 10]
``--iterable`` feeds an IterableDataset without a length, so the epoch bar has no total.
"""
import argparse
import time
import warnings

import torch
import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

warnings.filterwarnings("ignore")
ap = argparse.ArgumentParser()
ap.add_argument("--bar", choices=("tqdm", "rich"), default="tqdm")
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--iterable", action="store_true")
ap.add_argument("--sleep", type=float, default=0.0)
ap.add_argument("--steps", type=int, default=10)
args = ap.parse_args()


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(args.steps * 4):
            x = torch.randn(8, generator=g)
            yield x, x.sum(0, keepdim=True)


def sized(n):
    x = torch.randn(n, 8)
    return torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(8, 1)

    def training_step(self, batch, i):
        if args.sleep:
            time.sleep(args.sleep)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


train = torch.utils.data.DataLoader(Stream() if args.iterable else sized(args.steps * 4), batch_size=4)
val = torch.utils.data.DataLoader(sized(24), batch_size=4)
bar = RichProgressBar(refresh_rate=1) if args.bar == "rich" else TQDMProgressBar(refresh_rate=1)
trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                    enable_checkpointing=False, enable_model_summary=False, callbacks=[bar],
                    num_sanity_val_steps=2)
trainer.fit(Model(), train, val)
print("done", flush=True)
