"""``split --recommend``: how many traces per sub-batch the available RAM allows.

The table is seed 002's ("Tamaño de Batch Óptimo"; a seed is one of the field notes the
product comes from), made for its traces of about 14 MB each; the output calls it the RAM
table, and the row below 8 GB is our extrapolation. When the item size is known (NumPy and
torch tensors, from the file header, without loading), the suggestion is also computed:
the DataLoader keeps ``files_in_cache`` sub-batches in memory, and they should use at
most half of the available memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..sizes import format_size

__all__ = ["Recommendation", "recommend", "SEED_TABLE"]

GB = 1000**3
# (min available bytes, traces per batch low, high, files kept in cache low, high)
SEED_TABLE: tuple[tuple[int, int, int, int, int], ...] = (
    (64 * GB, 500, 1000, 5, 10),
    (32 * GB, 250, 500, 3, 5),
    (16 * GB, 200, 250, 2, 3),
    (8 * GB, 100, 150, 2, 2),
    (0, 25, 100, 1, 2),  # below the seed's table: extrapolated
)


@dataclass(frozen=True)
class Recommendation:
    available_bytes: int
    traces_per_batch: int
    low: int
    high: int
    files_in_cache: str
    item_bytes: int | None
    basis: str

    def describe(self) -> str:
        lines = [
            f"available RAM   {format_size(self.available_bytes, binary=False)}",
            f"RAM table       {self.low}-{self.high} traces per batch, {self.files_in_cache} files in the DataLoader cache",
        ]
        if self.item_bytes:
            lines.append(f"item size       {format_size(self.item_bytes)} (from the input's header)")
        lines.append(f"suggestion      --traces-per-batch {self.traces_per_batch}  ({self.basis})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def recommend(available_bytes: int, item_bytes: int | None = None) -> Recommendation:
    row = next(r for r in SEED_TABLE if available_bytes >= r[0])
    _, low, high, f_low, f_high = row
    files = f"{f_low}" if f_low == f_high else f"{f_low}-{f_high}"
    if item_bytes and item_bytes > 0:
        budget = available_bytes // 2 // f_high
        n = max(1, budget // item_bytes)
        basis = f"half the available RAM over {f_high} cached files of {format_size(item_bytes)} items"
        return Recommendation(available_bytes, int(n), low, high, files, item_bytes, basis)
    return Recommendation(available_bytes, low, low, high, files, None, "the low end of the table's row for this much RAM")
