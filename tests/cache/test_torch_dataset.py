"""CachedDataset through real DataLoader worker processes."""

from __future__ import annotations

from pathlib import Path

import logging

import pytest
import torch  # the optional extra; .ci/run installs torch==2.13.0
from torch.utils.data import DataLoader, Dataset

from cachewatch.engine import Cache
from cachewatch.engine.torch import CachedDataset


class CountingImages(Dataset):
    """Synthetic images; records in a directory which indices were computed (from any process)."""

    def __init__(self, n: int, calls_dir: Path) -> None:
        self.n = n
        self.calls_dir = calls_dir

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        (self.calls_dir / f"{i}-{torch.randint(0, 1 << 30, (1,)).item()}").touch()
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 16, 16, generator=g), i % 10


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_items_computed_once_then_read_by_all_workers(tmp_path: Path, context: str) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    cache = Cache(tmp_path / "cache", max_size="64MiB")
    ds = CachedDataset(CountingImages(24, calls), cache, key="v1/{index}")
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=context)
    first = [b for b in loader]
    assert len(list(calls.iterdir())) == 24  # every item computed exactly once
    second = [b for b in loader]
    assert len(list(calls.iterdir())) == 24  # the second epoch came from the cache
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    s = cache.stats()
    assert s.entries == 24
    cache.close()


def test_cache_full_of_pins_does_not_stop_training(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    cache = Cache(tmp_path / "cache", max_size="12KiB")  # room for one item (torch.save of a 3x16x16 tensor: two 4 KiB blocks)
    ds = CachedDataset(CountingImages(3, calls), cache)
    ds[0]
    assert "item/0" in cache
    with caplog.at_level(logging.WARNING, logger="cachewatch.torch"), cache.pin("item/0"):
        x1, _ = ds[1]  # the pinned entry cannot go, so item 1 cannot be stored: returned anyway
    assert x1.shape == (3, 16, 16)
    assert "item/1" not in cache and "item/0" in cache
    assert "not cached" in caplog.text
    ds[1]  # pin released: now item 0 is evicted and item 1 stored
    assert "item/1" in cache and "item/0" not in cache
    cache.close()


def test_key_template_must_name_the_index(tmp_path: Path) -> None:
    with Cache(tmp_path / "c", max_size="1MiB") as cache:
        with pytest.raises(ValueError, match="no {index}"):
            CachedDataset([1, 2], cache, key="v1")


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_share_a_redis_indexed_cache(tmp_path: Path, redis_aof, context: str) -> None:
    """The same through a Redis-indexed cache: forked workers reconnect, spawned ones reopen it
    from the pickle (its URL, node id and lease), and every worker writes as the node given."""
    calls = tmp_path / "calls"
    calls.mkdir()
    cache = Cache(tmp_path / "cache", max_size="64MiB", index=redis_aof.url, node="gpu-3")
    ds = CachedDataset(CountingImages(24, calls), cache, key="v1/{index}")
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=context)
    first = [b for b in loader]
    second = [b for b in loader]
    assert len(list(calls.iterdir())) == 24  # computed once, then read from the shared cache
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    s = cache.stats()
    assert s.entries == 24 and s.nodes == ("gpu-3",) and s.reserved_bytes == 0
    cache.close()
