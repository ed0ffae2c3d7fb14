"""torch integration: datasets whose items go through the managed cache.

Importing this package imports torch (an optional extra: ``pip install "torch==2.13.0"``);
nothing else in ``cachewatch.engine`` does.
"""

from .dataset import CachedDataset, torch_decode, torch_encode

__all__ = ["CachedDataset", "torch_encode", "torch_decode"]
