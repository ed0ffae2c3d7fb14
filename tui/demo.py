"""``cachewatch demo``: a small real training through a small managed cache, in a temporary directory.

The training is ``examples/train_cached.py`` (torch on the CPU, synthetic images, two
DataLoader workers) reading every item through a cache of :data:`DEMO_MAX_SIZE`; its
dataset is about twice that, so the cache fills within seconds and evicts a few times per
epoch from then on. Everything the demo writes (cache, training log, event log) stays in
the directory it prints; the engine runs detached like any headless engine, so quitting
the dashboard leaves it running, and ``cachewatch stop demo`` ends it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cachewatch.engine.errors import CachewatchError

__all__ = ["DEMO_NAME", "DEMO_MAX_SIZE", "DemoSetup", "prepare_demo", "example_script"]

DEMO_NAME = "demo"
DEMO_MAX_SIZE = "8MB"  # decimal, like the dashboard shows cache sizes
# 60 epochs of 50 steps at ~80 ms: about five minutes, with evictions every few seconds.
DEMO_TRAINING_ARGS = ("--epochs", "60", "--steps", "50", "--batch-size", "16", "--workers", "2",
                      "--prep-ms", "4", "--step-ms", "60", "--print-every", "10")


class DemoError(CachewatchError):
    pass


@dataclass(frozen=True)
class DemoSetup:
    directory: Path
    config_path: Path
    command: tuple[str, ...]

    def describe(self) -> str:
        return (f"demo: {Path(self.command[1]).name} (torch on the CPU, 2 DataLoader workers) through a "
                f"{DEMO_MAX_SIZE} cache in {self.directory}")


def example_script() -> Path:
    """``examples/train_cached.py``: from this checkout, or as installed with the wheel."""
    checkout = Path(__file__).resolve().parent.parent / "examples" / "train_cached.py"
    installed = Path(sys.prefix) / "share" / "cachewatch" / "examples" / "train_cached.py"
    for candidate in (checkout, installed):
        if candidate.is_file():
            return candidate
    raise DemoError(
        f"the demo training is neither at {checkout} nor at {installed}; reinstall cachewatch "
        "(`pip install -e .` in a checkout, or the wheel, which installs it under share/cachewatch/examples)"
    )


def check_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise DemoError("the demo trains with torch, which is not installed; run `pip install \"torch==2.13.0\"` (CPU build)")


def prepare_demo(base: str | os.PathLike[str] | None = None) -> DemoSetup:
    """Write the demo's ``cachewatch.toml`` into a new temporary directory (under ``base``)."""
    check_torch()
    script = example_script()
    directory = Path(tempfile.mkdtemp(prefix="cachewatch-demo-", dir=base))
    command = (sys.executable, str(script), *DEMO_TRAINING_ARGS)
    config = directory / "cachewatch.toml"
    argv = ", ".join(_toml_str(a) for a in command)
    config.write_text(
        "# Written by `cachewatch demo`. A small cache, so eviction shows within a minute.\n"
        "[cache]\n"
        'root = "cache"\n'
        f'max_size = "{DEMO_MAX_SIZE}"\n'
        "\n[run]\n"
        f"command = [{argv}]\n"
        'log_dir = "state"\n'
        f'name = "{DEMO_NAME}"\n'
        "stop_grace = \"5s\"\n"
        "\n[monitor]\n"
        'interval = "1s"\n'
    )
    return DemoSetup(directory=directory, config_path=config, command=command)


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
