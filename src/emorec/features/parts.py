"""Where `extract_features` puts each batch's vectors: straight into the cache's arrays (one
process), or into this rank's part of a sharded extraction, which rank 0 copies into the cache's
arrays once every rank is done (`emorec features extract` under torchrun).

A part holds one fixed-size binary record per image of the rank's shard of a split: its row in
the split, whether it was readable, its pooled vectors and grid (`part_files.ArrayPart`: appended
a batch at a time, resumed after a kill). The cache rank 0 assembles from the parts has the
rows, key and values one process would have written: `train --head-only` and `fit` cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emorec.part_files import ArrayPart, read_array_part

_CHUNK = 4096  # records per copy when merging: bounded memory on large caches


def record_dtype(views: int, channels: int, grid: int, grid_channels: int, dtype: str) -> np.dtype:
    """One image's record: its row in the split, readable or not, (V, C) vectors, (V, Cg, G, G) grid."""
    fields = [("row", "<i8"), ("valid", "?"), ("pooled", dtype, (views, channels))]
    if grid > 0:
        fields.append(("grid", dtype, (views, grid_channels, grid, grid)))
    return np.dtype(fields)


class ArraySink:
    """One process: batches go straight into the cache's arrays (`CacheWriter.add_split`)."""

    def __init__(self, arrays: dict[str, np.ndarray], count: int):
        self.arrays = arrays
        self.todo: Sequence[int] = range(count)

    def write(self, local: np.ndarray, pooled: np.ndarray, grid: np.ndarray | None) -> None:
        """`local`: the batch's readable images, as indices into `todo` (here, rows of the split)."""
        self.arrays["pooled"][local] = pooled
        if grid is not None:
            self.arrays["grid"][local] = grid
        self.arrays["valid"][local] = True

    def close(self) -> None:
        pass


class PartSink:
    """This rank's part of a split: a record for every image of `positions` (its rows of the
    split), the unreadable ones included, so the part stays a prefix of the shard. `todo` is what
    is left after the records an earlier, killed run wrote."""

    def __init__(self, path: Path, dtype: np.dtype, positions: Sequence[int], batch_size: int):
        self.dtype = dtype
        self.part = ArrayPart(path, dtype, positions, batch_size)
        self.todo = positions[self.part.done:]
        self.written = 0  # records of `todo` in the part

    def write(self, local: np.ndarray, pooled: np.ndarray, grid: np.ndarray | None) -> None:
        # Images of `todo` before this batch's first readable one that have no record yet were
        # unreadable (their batch may have had no readable image at all): written as invalid.
        end = int(local[-1]) + 1
        block = np.zeros(end - self.written, dtype=self.dtype)
        block["row"] = self.todo[self.written:end]
        at = local - self.written
        block["valid"][at] = True
        block["pooled"][at] = pooled
        if grid is not None:
            block["grid"][at] = grid
        self.part.append(block)
        self.written = end

    def close(self) -> None:
        rest = np.zeros(len(self.todo) - self.written, dtype=self.dtype)
        rest["row"] = self.todo[self.written:]
        self.part.append(rest)
        self.part.close()


def merge_part(arrays: dict[str, np.ndarray], path: Path, dtype: np.dtype, count: int) -> None:
    """Copy the `count` records of a finished part into the cache's arrays, at their rows."""
    records = read_array_part(path, dtype, count)
    for start in range(0, count, _CHUNK):
        chunk = records[start:start + _CHUNK]
        rows = chunk["row"]
        arrays["pooled"][rows] = chunk["pooled"]
        if "grid" in arrays:
            arrays["grid"][rows] = chunk["grid"]
        arrays["valid"][rows] = chunk["valid"]
