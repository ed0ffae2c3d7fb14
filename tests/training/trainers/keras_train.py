"""A tiny real Keras 3 run on the torch backend: synthetic data, no download.

    python keras_train.py [--verbose 1|2] [--epochs 3] [--steps 10] [--sleep 0.0] [--no-val]
"""
import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")
ap = argparse.ArgumentParser()
ap.add_argument("--verbose", type=int, default=2)
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--sleep", type=float, default=0.0)
ap.add_argument("--no-val", action="store_true")
args = ap.parse_args()

import numpy as np
import keras


class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if args.sleep:
            time.sleep(args.sleep)


rng = np.random.default_rng(0)
n = args.steps * 16
x = rng.random((n + 64, 8)).astype("float32")
y = (x.sum(1) > 4).astype("float32")
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
val = None if args.no_val else (x[n:], y[n:])
m.fit(x[:n], y[:n], epochs=args.epochs, batch_size=16, validation_data=val, verbose=args.verbose, callbacks=[Slow()])
print("done", flush=True)
