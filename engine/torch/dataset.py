"""A map-style dataset whose items go through the managed cache from every DataLoader worker.

The first time an index is asked for, the wrapped dataset computes the item and the
wrapper stores its serialised form; afterwards any worker, in any process, reads it
from the cache. The cache's bound holds across all workers because they share one
index (see :mod:`cachewatch.engine.cache`).

A failure to *store* (cache full of pinned entries, disk full) never fails the
training: the computed item is returned and a warning is logged once.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from ..cache import Cache
from ..errors import CacheBusy, CacheDiskFull, CacheFull

__all__ = ["CachedDataset", "torch_encode", "torch_decode"]

log = logging.getLogger("cachewatch.torch")


def torch_encode(item: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(item, buf)
    return buf.getvalue()


def torch_decode(data: bytes) -> Any:
    # weights_only: a cache file must never be able to run code when loaded.
    return torch.load(io.BytesIO(data), weights_only=True)


class CachedDataset(Dataset):
    """``CachedDataset(dataset, cache, key="v1/{index}")``.

    ``key`` is a format string with ``{index}`` or a callable ``index -> str``; put a version
    in it and change it when the preprocessing changes. ``encode``/``decode`` default to
    ``torch.save``/``torch.load(weights_only=True)`` (tensors, numbers, lists, dicts).
    """

    def __init__(
        self,
        dataset: Any,
        cache: Cache,
        *,
        key: str | Callable[[int], str] = "item/{index}",
        encode: Callable[[Any], bytes] = torch_encode,
        decode: Callable[[bytes], Any] = torch_decode,
    ) -> None:
        if isinstance(key, str) and "{index}" not in key:
            raise ValueError(f"key template {key!r} has no {{index}}; write e.g. 'v1/{{index}}'")
        self.dataset = dataset
        self.cache = cache
        self.key = key
        self.encode = encode
        self.decode = decode
        self._warned = False

    def __len__(self) -> int:
        return len(self.dataset)

    def key_for(self, index: int) -> str:
        return self.key(index) if callable(self.key) else self.key.format(index=index)

    def __getitem__(self, index: int) -> Any:
        key = self.key_for(index)
        data = self.cache.read(key)
        if data is not None:
            try:
                return self.decode(data)
            except Exception as exc:  # a damaged entry is a miss, not a crash
                log.warning("cache entry %r could not be decoded (%s); recomputing it", key, exc)
                self.cache.delete(key)
        item = self.dataset[index]
        try:
            self.cache.put(key, self.encode(item))
        except (CacheFull, CacheBusy, CacheDiskFull) as exc:
            if not self._warned:
                log.warning("item %r not cached: %s; training goes on uncached", key, exc)
                self._warned = True
        return item
