"""The feature cache: one extraction per (backbone, weights, size, views, grid, dataset content).

Uses a random-init `test_efficientnet` at 32 px on generated images: the numbers are meaningless,
the shapes, keys and hit/miss behaviour are what is specified here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emorec.config import Config
from emorec.errors import EmorecError
from emorec.features.cache import FeatureCache, find_cache
from emorec.features.extract import extract_features

BACKBONE = "test_efficientnet"


def split_cfg() -> Config:
    cfg = Config()
    cfg.data.val_fraction = 0.25
    cfg.data.test_fraction = 0.25
    return cfg


def extract(source: Path, cache_dir: Path, messages: list[str] | None = None, **kw) -> FeatureCache:
    args = dict(pretrained=False, image_size=32, augmented_views=1, grid=2, cfg=split_cfg(),
                num_workers=0, dtype="float32", progress=False)
    args.update(kw)
    log = messages.append if messages is not None else (lambda _m: None)
    return extract_features(str(source), BACKBONE, cache_dir=cache_dir, log=log, **args)


def test_arrays_have_one_row_per_sample_and_view(tiny_dataset: Path, tmp_path: Path):
    cache = extract(tiny_dataset, tmp_path / "cache")
    assert set(cache.splits) == {"train", "val", "test"}
    total = sum(len(cache.split(s)) for s in cache.splits)
    assert total == 48
    train, val = cache.split("train"), cache.split("val")
    channels = train.pooled.shape[2]
    # train: centre, mirror, one augmented draw; val/test: centre and mirror (the TTA views).
    assert train.views == ["center", "hflip", "aug1"] and val.views == ["center", "hflip"]
    assert train.pooled.shape == (len(train), 3, channels)
    assert train.grid.shape == (len(train), 3, channels, 2, 2)
    assert val.pooled.shape == (len(val), 2, channels)
    assert isinstance(train.pooled, np.memmap)
    assert train.valid.all() and np.isfinite(np.asarray(train.pooled)).all()
    # Views of one image differ (the mirror is really a different input) ...
    assert not np.allclose(train.pooled[:, 0], train.pooled[:, 1])
    # ... and labels follow the label map (sorted names).
    assert cache.label_names == ["amusement", "anger", "awe", "fear"]
    assert set(train.labels.tolist()) == {0, 1, 2, 3}


def test_second_call_is_a_cache_hit(tiny_dataset: Path, tmp_path: Path):
    first = extract(tiny_dataset, tmp_path / "cache")
    stamp = (first.root / "index.json").stat().st_mtime_ns
    messages: list[str] = []
    second = extract(tiny_dataset, tmp_path / "cache", messages)
    assert second.root == first.root
    assert any(m.startswith("cache hit") for m in messages)
    assert (first.root / "index.json").stat().st_mtime_ns == stamp


def test_changed_dataset_or_settings_get_a_new_key(tiny_dataset: Path, tmp_path: Path):
    first = extract(tiny_dataset, tmp_path / "cache")
    assert extract(tiny_dataset, tmp_path / "cache", grid=0).key != first.key
    assert extract(tiny_dataset, tmp_path / "cache", augmented_views=0).key != first.key
    # An image replaced in place (same path, new bytes) is a changed dataset.
    target = next((tiny_dataset / "awe").iterdir())
    Image.new("RGB", (40, 40), (1, 2, 3)).save(target)
    os.utime(target, ns=(1, 1))
    messages: list[str] = []
    changed = extract(tiny_dataset, tmp_path / "cache", messages)
    assert changed.key != first.key
    assert any(m.startswith("cache miss") for m in messages)


def test_the_training_augmentation_backend_does_not_change_the_key(tiny_dataset: Path, tmp_path: Path):
    # Cached views are augmented per image either way; the backend only matters to image training.
    first = extract(tiny_dataset, tmp_path / "cache")
    tensor_cfg = split_cfg()
    tensor_cfg.augment.backend = "tensor"
    messages: list[str] = []
    assert extract(tiny_dataset, tmp_path / "cache", messages, cfg=tensor_cfg).key == first.key
    assert any(m.startswith("cache hit") for m in messages)


def test_unreadable_images_are_skipped_and_counted(tiny_dataset: Path, tmp_path: Path):
    for i, folder in enumerate(sorted(tiny_dataset.iterdir())[:2]):
        (folder / f"broken_{i}.jpg").write_bytes(b"not a jpeg")
    cache = extract(tiny_dataset, tmp_path / "cache")
    skipped = sum(cache.index["splits"][s]["skipped"] for s in cache.splits)
    assert skipped == 2 and cache.index["stats"]["skipped"] == 2
    valid = np.concatenate([cache.split(s).valid for s in cache.splits])
    assert (~valid).sum() == 2


def test_interrupted_extraction_is_not_a_cache(tmp_path: Path):
    entry = tmp_path / "cache" / "0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "train_pooled.npy").write_bytes(b"partial")
    with pytest.raises(EmorecError, match="emorec features extract"):
        find_cache(entry)
    with pytest.raises(EmorecError, match="no finished feature cache"):
        find_cache(tmp_path / "cache")


def test_index_records_what_the_features_came_from(tiny_dataset: Path, tmp_path: Path):
    cache = extract(tiny_dataset, tmp_path / "cache")
    index = json.loads((cache.root / "index.json").read_text())
    assert index["spec"]["backbone"] == BACKBONE
    assert index["spec"]["weights"] == "random-init"
    assert index["spec"]["image_size"] == 32
    header, *rows = (cache.root / "manifest.csv").read_text().splitlines()
    assert header == "path,label,split" and len(rows) == 48
