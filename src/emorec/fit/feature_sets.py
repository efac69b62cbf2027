"""The feature sets a search compares, and the caches that hold them.

Per backbone, one extraction of every stage pooled to mean and std, over the train and val images
only (`features/extract.py`, cached), and the last-level mean vectors cut out of it
(`features/variants.py`): the grid's two variants. With several backbones, each variant of all of
them together is their caches joined column-wise (`features/combine.py`), which is what the
backbone group 'a+b' (`models/backbone_group.py`) computes, without running any backbone again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from emorec.errors import EmorecError
from emorec.fit.candidates import FeatureSet

# Where the multi-level extraction is cut into the feature sets the grid compares.
FEATURE_VARIANTS = (("last", "avg"), ("all", "meanstd"))
# The feature-set tag of every backbone together (ids: "combined-all-meanstd-linear-strong").
COMBINED_TAG = "combined"


def open_caches(known: dict[str, str] | None) -> dict[str, Any] | None:
    """The caches a search recorded for a backbone ('levels-pooling' -> cache folder), if every
    one of them is still complete on disk."""
    from emorec.features.cache import INDEX_NAME, FeatureCache

    if not known or not all((Path(p) / INDEX_NAME).is_file() for p in known.values()):
        return None
    return {k: FeatureCache(p) for k, p in known.items()}


def extract_variants(manifest, name: str, weights: str | None, pretrained: bool, *, image_size: int, views: int,
                     cache_dir: Path, cfg, workers: int, progress: bool, device: str,
                     log: Callable[[str], None], time_limit_s: float | None = None, shard=None) -> dict[str, Any]:
    """'levels-pooling' -> cache of every `FEATURE_VARIANTS` entry of backbone `name` on
    `manifest`: one all/meanstd extraction, the others cut out of it. A backbone without
    intermediate stages gives its last-level mean vectors only. `time_limit_s`: the extraction's
    deadline (`extract_features` raises `ExtractionDeadline` when it would pass it). `shard`: this
    torchrun rank's share (`emorec.shards.Shard`); the variants are cut by rank 0 alone."""
    from emorec.features.extract import extract_features
    from emorec.features.variants import derive_cache

    kwargs = dict(backbone=name, weights=weights, pretrained=pretrained, image_size=image_size,
                  augmented_views=views, grid=0, cache_dir=cache_dir, cfg=cfg, batch_size=32, num_workers=workers,
                  progress=progress, device=device, log=log, time_limit_s=time_limit_s, shard=shard)
    try:
        full = extract_features(manifest, feature_levels="all", pooling="meanstd", **kwargs)
        if shard is not None and not shard.is_main:
            return {"all-meanstd": full}
        return {f"{levels}-{pooling}": (full if (levels, pooling) == ("all", "meanstd") else
                                        derive_cache(full, levels, pooling, cache_dir, log=log))
                for levels, pooling in FEATURE_VARIANTS}
    except EmorecError as e:
        if "feature_levels=last" not in str(e):
            raise
        log(f"{name}: {e}; last-level features only")
        return {"last-avg": extract_features(manifest, **kwargs)}


def as_feature_sets(tag: str, backbone: str, caches: dict[str, Any]) -> list[tuple[FeatureSet, Any]]:
    """(feature set, cache) pairs of one backbone's caches."""
    out = []
    for key, cache in caches.items():
        levels, pooling = key.split("-")
        out.append((FeatureSet(tag, backbone, levels, pooling), cache))
    return out


def combined_sets(extracted: list[list[tuple[FeatureSet, Any]]], cache_dir: Path, log: Callable[[str], None],
                  note: Callable[[str], None]) -> list[tuple[FeatureSet, Any]]:
    """Every extracted backbone together (a backbone group): per feature variant all of them
    have, the members' caches joined column-wise. `note` gets one line per variant not combined
    (or one when fewer than two backbones were extracted)."""
    from emorec.features.combine import combine_caches

    if len(extracted) < 2:
        note(f"{COMBINED_TAG}: skipped, fewer than two backbones' features were extracted within the budget")
        return []
    variants = [(f.feature_levels, f.pooling) for f, _ in extracted[0]]
    shared = [v for v in variants if all(v in {(f.feature_levels, f.pooling) for f, _ in sets} for sets in extracted)]
    out = []
    for levels, pooling in shared:
        members = [next(c for f, c in sets if (f.feature_levels, f.pooling) == (levels, pooling)) for sets in extracted]
        try:
            cache = combine_caches(members, cache_dir, log=log)
        except EmorecError as e:
            note(f"{COMBINED_TAG}: skipped, {e}")
            continue
        out.append((FeatureSet(COMBINED_TAG, cache.spec["backbone"], levels, pooling), cache))
    return out


def member_sets(features: FeatureSet, extracted: list[list[tuple[FeatureSet, Any]]]) -> list[str]:
    """The name of each backbone's feature set of the same variant as `features`."""
    variant = (features.feature_levels, features.pooling)
    return [next(f for f, _ in sets if (f.feature_levels, f.pooling) == variant).name for sets in extracted]
