"""The feature cache of a backbone group, assembled from its members' caches.

A `BackboneGroup` (`models/backbone_group.py`, `model.backbone: a+b`) pools to the members'
vectors side by side, so its cache is the members' caches joined column-wise, in the order
`group_columns` gives. `combine_caches` writes it with the spec (and hence the key) that
`extract_features` for the group would write: a head trained on it serves pixels through the
group model unchanged, and `emorec fit` tries "every backbone together" without running any
backbone again. The members' caches must hold the same images, views, transforms and levels /
pooling: they differ only in backbone and weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emorec.errors import EmorecError
from emorec.features.cache import INDEX_NAME, CacheWriter, FeatureCache, cache_key
from emorec.features.variants import manifest_rows

# Spec entries that name the backbone; every other entry must agree across the members.
_MEMBER_KEYS = ("backbone", "weights")
_CHUNK = 4096  # rows per copy: bounded memory on large caches


def combine_caches(caches: list[FeatureCache], cache_dir: str | Path, log=print) -> FeatureCache:
    """The cache of the group of `caches`' backbones (found if written before)."""
    from emorec.models.backbone_group import SEPARATOR, group_columns

    if len(caches) < 2:
        raise EmorecError("combining feature caches needs two or more")
    specs = [dict(c.spec) for c in caches]
    shared = {k: v for k, v in specs[0].items() if k not in _MEMBER_KEYS}
    for cache, spec in zip(caches[1:], specs[1:]):
        other = {k: v for k, v in spec.items() if k not in _MEMBER_KEYS}
        if other != shared:
            differ = sorted(k for k in set(other) | set(shared) if other.get(k) != shared.get(k))
            raise EmorecError(f"feature caches {caches[0].root} and {cache.root} differ in {', '.join(differ)}; "
                              "only caches of the same images and settings can be combined")
    if any(s["weights"] == "random-init" for s in specs):
        # The group would draw its members' random weights anew, not reproduce these vectors.
        raise EmorecError("feature caches of randomly initialised backbones cannot be combined; extract them with "
                          "weights files or pretrained weights")
    stats = [c.index.get("stats", {}) for c in caches]
    levels, pooling = shared.get("feature_levels", "last"), shared.get("pooling", "avg")
    member_channels = [s.get("level_channels") for s in stats]
    if not all(member_channels):
        raise EmorecError("a feature cache to combine does not list its level channels; extract it again")
    spec = {**shared, "backbone": SEPARATOR.join(s["backbone"] for s in specs),
            "weights": SEPARATOR.join(s["weights"] for s in specs)}
    key = cache_key(spec)
    root = Path(cache_dir) / key
    if (root / INDEX_NAME).is_file():
        return FeatureCache(root)
    plan = group_columns(member_channels, levels, pooling)
    width = sum(len(columns) for _, columns in plan)
    writer = CacheWriter(root, key, spec, caches[0].label_names)
    for name in caches[0].splits:
        parts = [c.split(name) for c in caches]
        first = parts[0]
        if any(p.paths != first.paths or p.views != first.views for p in parts[1:]):
            raise EmorecError(f"feature caches to combine list different images or views in split '{name}'")
        grids = [p.grid for p in parts]
        grid = int(grids[0].shape[-1]) if all(g is not None for g in grids) else 0
        grid_channels = sum(int(g.shape[2]) for g in grids) if grid else None
        arrays = writer.add_split(name, first.paths, first.labels.tolist(), first.views, width, grid,
                                  str(first.pooled.dtype), grid_channels=grid_channels)
        for start in range(0, len(first), _CHUNK):
            rows = slice(start, start + _CHUNK)
            arrays["pooled"][rows] = np.concatenate([np.asarray(parts[i].pooled[rows])[:, :, columns]
                                                     for i, columns in plan], axis=2)
            if grid:
                arrays["grid"][rows] = np.concatenate([np.asarray(g[rows]) for g in grids], axis=2)
        # A sample is usable only where every member could read it.
        arrays["valid"][:] = np.logical_and.reduce([np.asarray(p.valid) for p in parts])
    weights = [s.get("weights_path") for s in stats]
    combined_stats = {
        "channels": width,
        "level_channels": ([c for ch in member_channels for c in ch] if levels == "all"
                           else [sum(ch[-1] for ch in member_channels)]),
        "weights_path": SEPARATOR.join(w or "" for w in weights) if any(weights) else None,
        "pretrained": bool(stats[0].get("pretrained", True)),
        "data_mean": stats[0].get("data_mean"), "data_std": stats[0].get("data_std"),
        "combined_from": [str(c.root) for c in caches],
        "seconds": round(sum(float(s.get("seconds", 0.0)) for s in stats), 2),
    }
    rows = manifest_rows(caches[0].manifest_csv)
    cache = writer.finish(rows, combined_stats)
    log(f"combined {len(caches)} feature caches ({width} columns): {root}")
    return cache

