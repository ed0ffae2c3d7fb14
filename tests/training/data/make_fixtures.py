"""Regenerates the tqdm and Keras fixtures in this folder from the real libraries.

Not run by the tests (tqdm and keras are not dependencies): the outputs are committed.
Run by hand in a throwaway venv:
    pip install tqdm keras torch==2.13.0
    KERAS_BACKEND=torch python tests/training/data/make_fixtures.py
The fixtures of the real trainers (``transformers5_trainer_eval.txt``, ``lightning_rich.pty.txt``,
``lightning_tqdm_unknown_total.txt``, ``keras3_verbose2.txt``) are the output of the scripts in
``tests/training/trainers/`` (see their docstrings; ``--eval``, ``--bar rich`` through a pty,
``--iterable``, ``--verbose 2``), captured once; the tests also run those scripts live.
Each fixture is the exact byte stream the program wrote (``\\r`` redraws and ANSI codes
included); ``*.pty.txt`` ones were written to a pseudo-terminal, the others to a pipe.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROGRAMS = {
    "tqdm_epoch_desc": """
        import time, sys
        from tqdm import tqdm
        for epoch in range(1, 3):
            bar = tqdm(range(12), desc=f"Epoch {epoch}/2", mininterval=0, ncols=100)
            for i in bar:
                time.sleep(0.02)
                bar.set_postfix(loss=round(1.0 / (i + 1 + 12 * epoch), 4), acc=0.5 + i / 100)
    """,
    "tqdm_unknown_total": """
        import time
        from tqdm import tqdm
        def batches():
            for i in range(15):
                time.sleep(0.01)
                yield i
        for b in tqdm(batches(), desc="Epoch 3", mininterval=0):
            pass
    """,
    "tqdm_s_per_it": """
        import time
        from tqdm import tqdm
        for i in tqdm(range(4), mininterval=0):
            time.sleep(1.2)
    """,
    "tqdm_nested_colour": """
        import time
        from tqdm import tqdm
        for epoch in tqdm(range(3), desc="Epochs", position=0, colour="green", mininterval=0):
            for step in tqdm(range(8), desc=f"Epoch {epoch}", position=1, leave=False, mininterval=0):
                time.sleep(0.01)
    """,
    "tqdm_lightning_style": """
        import time
        from tqdm import tqdm
        for epoch in range(2):
            bar = tqdm(total=10, desc=f"Epoch {epoch}", mininterval=0, dynamic_ncols=False, ncols=120)
            for i in range(10):
                time.sleep(0.01)
                bar.update(1)
                bar.set_postfix(v_num=0, train_loss=f"{0.9 - 0.03 * (i + 10 * epoch):.3f}")
            val = tqdm(total=4, desc="Validation DataLoader 0", leave=False, mininterval=0)
            for j in range(4):
                val.update(1)
            val.close()
            bar.close()
    """,
    "hf_trainer_style": """
        import time
        from tqdm import tqdm
        bar = tqdm(total=40, mininterval=0)
        for step in range(1, 41):
            time.sleep(0.01)
            bar.update(1)
            if step % 10 == 0:
                # transformers' ProgressCallback.on_log: self.training_bar.write(str(logs))
                bar.write(str({"loss": round(0.7 - step / 100, 4), "grad_norm": 1.25, "learning_rate": 5e-05 * (1 - step / 40), "epoch": step / 20}))
        bar.write(str({"train_runtime": 0.6131, "train_samples_per_second": 521.9, "train_steps_per_second": 65.24, "train_loss": 0.45, "epoch": 2.0}))
        bar.close()
    """,
    "keras3_fit": """
        import os
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import numpy as np, keras
        x = np.random.rand(256, 8).astype("float32"); y = (x.sum(1) > 4).astype("float32")
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
        m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=1)
    """,
}


def run_pipe(code: str) -> bytes:
    return subprocess.run([sys.executable, "-c", code], capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True).stdout


def run_pty(code: str) -> bytes:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["COLUMNS"] = "100"
        os.execv(sys.executable, [sys.executable, "-c", code])
    out = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    os.waitpid(pid, 0)
    return out.replace(b"\r\n", b"\n")  # the pty's own newline translation, not the program's


def main() -> None:
    for name, program in PROGRAMS.items():
        code = textwrap.dedent(program)
        (HERE / f"{name}.txt").write_bytes(run_pipe(code))
        if name == "keras3_fit":
            (HERE / f"{name}.pty.txt").write_bytes(run_pty(code))
        print("wrote", name)


if __name__ == "__main__":
    main()
