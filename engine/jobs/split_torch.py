"""Splitting torch ``.pt`` files: a tensor along its first dimension, or a list/tuple of items.

The input is loaded with ``mmap=True``: tensor data stays in the file and is paged in
as sub-batches are written. Each sub-batch's tensors are cloned before saving, because
``torch.save`` of a slice would save the slice's whole underlying storage.

Loading tries ``weights_only=True`` first (tensors and plain containers, no code run);
a file that needs more is loaded as a full pickle, which runs code: **split only files
from a trusted source.** Old (non-zip) ``.pt`` files cannot be memory-mapped and are
loaded whole.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from .base import JobContext
from .equality import deep_equal
from .split_formats import Check, SplitInputError, SplitValidationError, Splitter, shown_name

__all__ = ["TorchSplitter", "load_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise SplitInputError("splitting .pt files needs torch; install it with pip install 'cachewatch[torch]'") from None
    return torch


def load_torch(path: Path, ctx: JobContext | None = None) -> tuple[Any, bool]:
    """``(object, weights_only)``; raises :class:`SplitInputError` with the reason."""
    torch = _torch()
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise SplitInputError(f"'{path}' cannot be read ({exc.strerror})") from None
    if size == 0:
        raise SplitInputError(f"'{path}' is empty (0 bytes); there is nothing to split — remove it or re-create it")
    last: BaseException | None = None
    for weights_only in (True, False):
        for mmap in (True, False):
            try:
                return torch.load(path, map_location="cpu", mmap=mmap, weights_only=weights_only), weights_only
            except pickle.UnpicklingError as exc:
                last = exc
                if weights_only:
                    break  # needs a full unpickle: try weights_only=False
                raise SplitInputError(f"'{path}' is not a valid torch file ({exc}); the file is left as it was") from None
            except RuntimeError as exc:
                last = exc
                if mmap and "mmap" in str(exc):
                    continue  # legacy (non-zip) format: load without mmap
                raise SplitInputError(
                    f"'{path}' is not a valid torch file or is truncated ({str(exc).splitlines()[0]}); the file is left as it was"
                ) from None
            except (EOFError, ValueError, OSError) as exc:
                raise SplitInputError(f"'{path}' is truncated or corrupt ({exc}); the file is left as it was") from None
            except (ModuleNotFoundError, ImportError, AttributeError) as exc:
                raise SplitInputError(
                    f"'{path}' needs code that is not importable here ({type(exc).__name__}: {exc}); run split where it was written"
                ) from None
        if weights_only and ctx is not None:
            ctx.warn(f"'{shown_name(path)}' holds more than tensors; loading it as a full pickle (trusted files only)")
    raise SplitInputError(f"'{path}' cannot be loaded ({last}); the file is left as it was")


def _compact(x: Any) -> Any:
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, list):
        return [_compact(v) for v in x]
    if isinstance(x, tuple):
        return type(x)(_compact(v) for v in x) if not hasattr(x, "_fields") else type(x)(*(_compact(v) for v in x))
    if isinstance(x, dict):
        return type(x)((k, _compact(v)) for k, v in x.items())
    return x


class TorchSplitter(Splitter):
    fmt = "torch"

    def __init__(self, path: Path, ctx: JobContext) -> None:
        super().__init__(path, ctx)
        torch = _torch()
        self.obj, self.weights_only = load_torch(path, ctx)
        if isinstance(self.obj, torch.Tensor):
            if self.obj.dim() == 0:
                raise SplitInputError(f"'{path}' holds a single value (0-d tensor); there is no first axis to split along")
            self.count = int(self.obj.shape[0])
        elif isinstance(self.obj, (list, tuple)):
            self.count = len(self.obj)
        else:
            raise SplitInputError(
                f"'{path}' holds a {type(self.obj).__name__}, not a tensor or a list; split takes a tensor (split along "
                f"dim 0) or a list/tuple of items"
            )
        if self.count == 0:
            raise SplitInputError(f"'{path}' has 0 items; there is nothing to split")

    @staticmethod
    def out_suffix(compress: bool) -> str:
        return ".pt"

    def item_bytes(self) -> int | None:
        torch = _torch()
        if isinstance(self.obj, torch.Tensor):
            return int(self.obj[:1].nbytes)
        return None

    def take(self, start: int, stop: int) -> Any:
        return (start, stop)

    def _slice(self, start: int, stop: int) -> Any:
        torch = _torch()
        if isinstance(self.obj, torch.Tensor):
            return self.obj[start:stop]
        return self.obj[start:stop]

    def write(self, payload: Any, part: Path, *, compress: bool, level: int, check: Check) -> None:
        torch = _torch()
        s, e = payload
        data = _compact(self._slice(s, e))
        check()
        with open(part, "xb") as fh:
            torch.save(data, fh)
        del data

    def validate(self, payload: Any, path: Path, *, start: int, check: Check) -> None:
        s, e = payload
        torch = _torch()
        try:
            loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=self.weights_only)
        except Exception as exc:
            raise SplitValidationError(f"sub-batch '{shown_name(path)}' does not load back ({type(exc).__name__}: {exc})") from None
        orig = self._slice(s, e)
        if type(loaded) is not type(orig) or len(loaded) != len(orig):
            raise SplitValidationError(
                f"sub-batch '{shown_name(path)}' loads back as {type(loaded).__name__} of {len(loaded)}, expected {e - s} items"
            )
        if isinstance(orig, torch.Tensor):
            step = max(1, (16 << 20) // max(1, int(orig[:1].nbytes)))
            for i in range(0, e - s, step):
                if not deep_equal(orig[i : i + step], loaded[i : i + step]):
                    raise SplitValidationError(f"rows {s + i}.. of '{self.path.name}' differ in '{shown_name(path)}'")
                check()
            return
        for i, (a, b) in enumerate(zip(orig, loaded)):
            if not deep_equal(a, b):
                raise SplitValidationError(f"item {s + i} of '{self.path.name}' differs in '{shown_name(path)}'")
            check()

    def close(self) -> None:
        self.obj = None
