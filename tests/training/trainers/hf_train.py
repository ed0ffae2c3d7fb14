"""A tiny real Hugging Face Trainer run: model built from a config, synthetic data, CPU, no download.

    python hf_train.py [--epochs 3] [--eval] [--no-tqdm] [--sleep 0.0] [--steps-per-epoch 10]
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--eval", action="store_true")
ap.add_argument("--no-tqdm", action="store_true")
ap.add_argument("--sleep", type=float, default=0.0, help="extra seconds per training step")
ap.add_argument("--steps-per-epoch", type=int, default=10)
ap.add_argument("--logging-steps", type=int, default=2)
args = ap.parse_args()

torch.manual_seed(0)
config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=16, num_labels=2)
model = BertForSequenceClassification(config)


class Toy(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.x = torch.randint(0, 64, (n, 8), generator=g)
        self.y = (self.x.sum(1) % 2)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}


class Slow(TrainerCallback):
    def on_step_end(self, *a, **k):
        if args.sleep:
            time.sleep(args.sleep)


batch = 4
out = tempfile.mkdtemp(prefix="hf-train-")
targs = TrainingArguments(
    output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=batch,
    per_device_eval_batch_size=batch, logging_steps=args.logging_steps, report_to="none",
    save_strategy="no", use_cpu=True, disable_tqdm=args.no_tqdm,
    eval_strategy="epoch" if args.eval else "no", dataloader_num_workers=0,
)
trainer = Trainer(model=model, args=targs, train_dataset=Toy(batch * args.steps_per_epoch),
                  eval_dataset=Toy(batch * 6) if args.eval else None, callbacks=[Slow()])
trainer.train()
print("done", flush=True)
