"""Is a reloaded item the same as the original? Exactly, for the things batches hold.

Fast path: both objects are pickled into a hash (no copy of the bytes is kept). Equal
pickles mean equal objects, NaNs and ``-0.0`` included, for any picklable type.

Pickles can differ for equal objects (a set's iteration order after a reload, a
non-contiguous array view that pickles as a copy), so a mismatch falls back to a
structural comparison: types, lengths, dict keys, arrays and tensors bit for bit, and
``==`` for everything else. Nothing here is approximate.
"""

from __future__ import annotations

import math
import pickle
import sys
from typing import Any

import numpy as np
import xxhash

__all__ = ["items_equal", "deep_equal", "pickle_digest", "arrays_equal"]

_MAX_DEPTH = 200


class _HashSink:
    __slots__ = ("h",)

    def __init__(self) -> None:
        self.h = xxhash.xxh3_128()

    def write(self, b: Any) -> None:
        self.h.update(b)


def pickle_digest(obj: Any) -> str | None:
    """xxh3_128 of ``obj``'s protocol-5 pickle, streamed; None when it cannot be pickled."""
    sink = _HashSink()
    try:
        pickle.Pickler(sink, protocol=5).dump(obj)
    except Exception:
        return None
    return sink.h.hexdigest()


def items_equal(a: Any, b: Any) -> bool:
    da = pickle_digest(a)
    if da is not None and da == pickle_digest(b):
        return True
    return deep_equal(a, b)


def arrays_equal(a: np.ndarray, b: np.ndarray, chunk_bytes: int = 16 << 20) -> bool:
    """Same dtype, shape and bytes; compared in row chunks so a memory map is never copied whole."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.hasobject:
        return all(deep_equal(x, y) for x, y in zip(a.ravel(order="K").tolist(), b.ravel(order="K").tolist()))
    if a.ndim == 0:
        return a.tobytes() == b.tobytes()
    row = max(1, a[:1].nbytes)
    step = max(1, chunk_bytes // row)
    for i in range(0, a.shape[0], step):
        if a[i : i + step].tobytes() != b[i : i + step].tobytes():
            return False
    return True


def _torch_equal(a: Any, b: Any) -> bool:
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape) or a.layout != b.layout:
        return False
    if a.is_sparse or a.is_quantized:
        return bool((a == b).all()) if not a.is_sparse else deep_equal(a.to_dense(), b.to_dense())
    import torch

    ac, bc = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if ac.numel() == 0:
        return True
    return bool(torch.equal(ac.view(-1).view(torch.uint8), bc.view(-1).view(torch.uint8)))


def deep_equal(a: Any, b: Any, _depth: int = 0) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if _depth > _MAX_DEPTH:
        return bool(a == b)
    if isinstance(a, np.ndarray):
        return arrays_equal(a, b)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return _torch_equal(a, b)
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(deep_equal(x, y, _depth + 1) for x, y in zip(a, b))
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return False
        return all(deep_equal(v, b[k], _depth + 1) for k, v in a.items())
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if type(a).__eq__ is object.__eq__ and hasattr(a, "__dict__"):
        return deep_equal(vars(a), vars(b), _depth + 1)
    try:
        r = a == b
        return bool(r) if isinstance(r, (bool, np.bool_)) else bool(np.all(r))
    except Exception:
        return False
