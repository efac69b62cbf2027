"""Feature caches of cheaper settings cut out of one multi-level cache, without the backbone.

A cache extracted with `feature_levels="all"` and `pooling="meanstd"` holds, per view, the mean
and standard deviation of every channel of every stage (layout in models/pooling.py). The vector
of the last level only, or of the means only, is a subset of its columns, so `derive_cache`
writes that subset as a cache of its own, with the spec (and hence the key) a direct extraction
with those settings would have: `emorec train --head-only` and the model on pixels cannot tell
the difference. `emorec fit` compares last-level and multi-level features this way at the cost
of one extraction per backbone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from emorec.errors import EmorecError
from emorec.features.cache import INDEX_NAME, CacheWriter, FeatureCache, cache_key


def derive_cache(source: FeatureCache, feature_levels: str, pooling: str, cache_dir: str | Path,
                 log=print) -> FeatureCache:
    """The cache `extract_features(..., feature_levels, pooling)` would write, from `source`
    (an `all` / `meanstd` cache of the same data and backbone); a finished one is reused."""
    from emorec.models.pooling import select_columns

    spec = dict(source.spec)
    if spec.get("feature_levels", "last") != "all" or spec.get("pooling", "avg") != "meanstd":
        raise EmorecError(f"feature cache {source.root} holds {spec.get('feature_levels', 'last')}/"
                          f"{spec.get('pooling', 'avg')} vectors; deriving needs one extracted with "
                          "feature_levels=all and pooling=meanstd")
    stats = dict(source.index.get("stats", {}))
    channels = stats.get("level_channels")
    if not channels:
        raise EmorecError(f"feature cache {source.root} does not list its level channels; extract it again")
    columns = np.asarray(select_columns(channels, feature_levels, pooling))
    spec.pop("feature_levels", None)
    spec.pop("pooling", None)
    if feature_levels != "last":
        spec["feature_levels"] = feature_levels
    if pooling != "avg":
        spec["pooling"] = pooling
    key = cache_key(spec)
    root = Path(cache_dir) / key
    if (root / INDEX_NAME).is_file():
        return FeatureCache(root)
    writer = CacheWriter(root, key, spec, source.label_names)
    for name in source.splits:
        split = source.split(name)
        arrays = writer.add_split(name, split.paths, split.labels.tolist(), split.views, len(columns), 0,
                                  str(split.pooled.dtype))
        for start in range(0, len(split), 4096):  # bounded memory on large caches
            arrays["pooled"][start:start + 4096] = np.asarray(split.pooled[start:start + 4096])[:, :, columns]
        arrays["valid"][:] = split.valid
        if split.grid is not None:  # the last map's grid does not depend on the levels or pooling
            shutil.copyfile(source.root / f"{name}_grid.npy", root / f"{name}_grid.npy")
    rows = manifest_rows(source.manifest_csv)
    stats.update(channels=int(len(columns)),
                 level_channels=channels if feature_levels == "all" else channels[-1:],
                 derived_from=str(source.root))
    cache = writer.finish(rows, stats)
    log(f"derived {feature_levels}/{pooling} features ({len(columns)} columns) from {source.root}: {root}")
    return cache


def manifest_rows(path: Path) -> list[tuple[str, str, str]]:
    import csv

    with open(path, newline="") as f:
        return [(r["path"], r["label"], r["split"]) for r in csv.DictReader(f)]


def describe(cache: FeatureCache) -> str:
    """`backbone levels/pooling (D)` for logs and leaderboards."""
    spec = cache.spec
    return (f"{spec['backbone']} {spec.get('feature_levels', 'last')}/{spec.get('pooling', 'avg')} "
            f"({cache.index.get('stats', {}).get('channels', '?')})")

