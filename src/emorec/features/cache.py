"""Memory-mapped cache of frozen-backbone features, one directory per cache key.

Layout of `<cache_dir>/<key>/`:
    index.json              what was extracted (backbone, weights hash, sizes, views, splits);
                            written last, so a directory without it is an interrupted extraction
    manifest.csv            path,label,split of every sample, in cache row order
    <split>_pooled.npy      (N, V, D) pooled features (the model's `forward_vectors`: the last map's
                            channel means, or every stage pooled; spec feature_levels / pooling)
    <split>_grid.npy        (N, V, C, G, G) last feature map adaptively pooled to G x G (G > 0)
    <split>_labels.npy      (N,) int64 label indices (LabelMap order)
    <split>_valid.npy       (N,) bool, False where the image could not be read

The arrays are `.npy` files opened with `np.load(mmap_mode="r")`: memory-mapped (a 30k x 3 x 1280
cache never has to fit in RAM twice) yet readable by any numpy user. The key hashes every input
that changes the numbers, so a second extraction with the same inputs is free and a changed
dataset or weights file lands in a new directory instead of silently reusing stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emorec.errors import EmorecError

INDEX_NAME = "index.json"
# Where `emorec features extract` writes and `emorec train --head-only` looks, unless told otherwise.
DEFAULT_CACHE_ROOT = ".cache/features"
FORMAT = "emorec-features"
FORMAT_VERSION = 1


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a weights file: the same name with other bytes must not hit the cache."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_fingerprint(rows: list[tuple[str, str, str]]) -> str:
    """Hash of (path, label, split) plus each file's size and mtime.

    Size and mtime catch an image replaced in place without reading 30k files; a relabelled or
    re-split sample changes the row itself.
    """
    h = hashlib.sha256()
    for path, label, split in rows:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{path}\t{label}\t{split}\t{stamp}\n".encode())
    return h.hexdigest()


def cache_key(spec: dict[str, Any]) -> str:
    """Short stable hash of the extraction spec (JSON with sorted keys)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class SplitFeatures:
    """Features of one split. `pooled[i, v]` is sample i seen through view `views[v]`."""

    name: str
    pooled: np.ndarray  # (N, V, C) memmap
    grid: np.ndarray | None  # (N, V, C, G, G) memmap or None
    labels: np.ndarray  # (N,)
    valid: np.ndarray  # (N,) bool
    views: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)


class FeatureCache:
    """A finished cache directory: its index plus lazily memory-mapped split arrays."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index_path = self.root / INDEX_NAME
        if not index_path.is_file():
            raise EmorecError(
                f"no feature cache at {self.root} (missing {INDEX_NAME}); "
                "run `emorec features extract` first, or point train.features_dir at its output"
            )
        self.index: dict[str, Any] = json.loads(index_path.read_text())
        if self.index.get("format") != FORMAT:
            raise EmorecError(f"{index_path} is not an emorec feature cache; re-run `emorec features extract`")

    @property
    def key(self) -> str:
        return self.index["key"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.index["spec"]

    @property
    def label_names(self) -> list[str]:
        return list(self.index["label_names"])

    @property
    def splits(self) -> list[str]:
        return list(self.index["splits"])

    @property
    def manifest_csv(self) -> Path:
        return self.root / "manifest.csv"

    def split(self, name: str) -> SplitFeatures:
        if name not in self.index["splits"]:
            raise EmorecError(
                f"feature cache {self.root} has no split '{name}'; it has {', '.join(self.splits)}"
            )
        info = self.index["splits"][name]
        grid_file = self.root / f"{name}_grid.npy"
        return SplitFeatures(
            name=name,
            pooled=np.load(self.root / f"{name}_pooled.npy", mmap_mode="r"),
            grid=np.load(grid_file, mmap_mode="r") if grid_file.is_file() else None,
            labels=np.load(self.root / f"{name}_labels.npy"),
            valid=np.load(self.root / f"{name}_valid.npy"),
            views=list(info["views"]),
            paths=list(info["paths"]),
        )


class CacheWriter:
    """Creates the arrays of a new cache entry; `finish()` writes the index that makes it valid."""

    def __init__(self, root: str | Path, key: str, spec: dict[str, Any], label_names: list[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # A leftover index from an older, interrupted attempt must not survive a rewrite.
        (self.root / INDEX_NAME).unlink(missing_ok=True)
        self.index: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "key": key,
            "spec": spec,
            "label_names": list(label_names),
            "splits": {},
        }
        self.arrays: dict[str, dict[str, np.ndarray]] = {}

    def add_split(
        self,
        name: str,
        paths: list[str],
        labels: list[int],
        views: list[str],
        channels: int,
        grid: int,
        dtype: str,
        grid_channels: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Arrays for one split: pooled (N, V, channels), grid (N, V, grid_channels, G, G) (the
        last feature map's channels; `channels` when not given)."""
        n, v = len(paths), len(views)
        grid_channels = channels if grid_channels is None else grid_channels
        pooled = np.lib.format.open_memmap(self.root / f"{name}_pooled.npy", mode="w+", dtype=dtype, shape=(n, v, channels))
        arrays = {"pooled": pooled}
        if grid > 0:
            arrays["grid"] = np.lib.format.open_memmap(
                self.root / f"{name}_grid.npy", mode="w+", dtype=dtype, shape=(n, v, grid_channels, grid, grid)
            )
        else:
            (self.root / f"{name}_grid.npy").unlink(missing_ok=True)
        arrays["valid"] = np.zeros(n, dtype=bool)
        np.save(self.root / f"{name}_labels.npy", np.asarray(labels, dtype=np.int64))
        self.index["splits"][name] = {"count": n, "views": list(views), "paths": list(paths), "skipped": 0}
        self.arrays[name] = arrays
        return arrays

    def finish(self, manifest_rows: list[tuple[str, str, str]], stats: dict[str, Any]) -> FeatureCache:
        for name, arrays in self.arrays.items():
            for key in ("pooled", "grid"):
                if key in arrays:
                    arrays[key].flush()
            np.save(self.root / f"{name}_valid.npy", arrays["valid"])
            self.index["splits"][name]["skipped"] = int((~arrays["valid"]).sum())
        with open(self.root / "manifest.csv", "w") as f:
            f.write("path,label,split\n")
            for path, label, split in manifest_rows:
                f.write(f"{_csv_field(path)},{_csv_field(label)},{split}\n")
        self.index["stats"] = stats
        tmp = self.root / (INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps(self.index, indent=1))
        os.replace(tmp, self.root / INDEX_NAME)
        return FeatureCache(self.root)


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def find_cache(path: str | Path) -> FeatureCache:
    """`path` is a cache entry (has index.json) or a cache root holding exactly one entry."""
    path = Path(path)
    if (path / INDEX_NAME).is_file():
        return FeatureCache(path)
    if not path.is_dir():
        raise EmorecError(f"feature cache not found: {path}; run `emorec features extract ... --cache-dir {path}`")
    entries = sorted(p for p in path.iterdir() if (p / INDEX_NAME).is_file())
    if len(entries) == 1:
        return FeatureCache(entries[0])
    if not entries:
        raise EmorecError(f"no finished feature cache under {path}; run `emorec features extract` first")
    raise EmorecError(
        f"{path} holds {len(entries)} feature caches ({', '.join(p.name for p in entries)}); "
        "set train.features_dir to one of them"
    )
