"""Multi-level features: every stage pooled (mean, mean + std, GeM), cached under their own key,
and the model computing from pixels exactly the vectors its head was trained on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emorec.api import train
from emorec.config import Config
from emorec.models import build_model
from emorec.models.pooling import pool_levels, pool_map, pooled_width, select_columns

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import data, extract_cache, one_thread, tiny_config  # noqa: E402,F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mean_std_and_gem_per_channel():
    x = torch.rand(2, 3, 4, 5) * 4
    torch.testing.assert_close(pool_map(x, "avg"), x.mean((2, 3)))
    torch.testing.assert_close(pool_map(x, "meanstd"), torch.cat([x.mean((2, 3)), x.std((2, 3), unbiased=False)], 1))
    gem = pool_map(x, "gem")
    assert torch.all(gem >= x.mean((2, 3))) and torch.all(gem <= x.amax((2, 3)))


@pytest.mark.parametrize("levels, pooling", [("last", "avg"), ("last", "meanstd"), ("all", "avg"), ("all", "meanstd")])
def test_cheaper_vectors_are_columns_of_the_all_meanstd_vector(levels, pooling):
    maps = [torch.randn(2, c, 3, 3) for c in (4, 6, 5)]
    full = pool_levels(maps, "meanstd")
    wanted = pool_levels(maps if levels == "all" else maps[-1:], pooling)
    columns = select_columns([4, 6, 5], levels, pooling)
    assert len(columns) == wanted.shape[1] == pooled_width([4, 6, 5] if levels == "all" else [5], pooling)
    torch.testing.assert_close(full[:, columns], wanted)


def test_a_multi_level_model_feeds_its_head_the_pooled_stages():
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained = "test_efficientnet", False
    cfg.model.hidden_dims, cfg.model.dropout = [8], [0.0]
    cfg.model.feature_levels, cfg.model.pooling = "all", "meanstd"
    model = build_model(cfg.model, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = model.forward_levels(x)
    assert len(maps) == len(model.backbone.feature_info) == 5
    assert torch.equal(maps[-1], model.forward_features(x)), "the last level is the usual map"
    assert model.head.in_channels == 2 * sum(m.shape[1] for m in maps)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.forward_vectors(x)))


@pytest.mark.parametrize("levels, pooling", [("all", "meanstd"), ("last", "gem")])
def test_head_only_run_on_multi_level_features_serves_pixels(data, tmp_path, levels, pooling):
    from emorec.data.imageio import load_rgb
    from emorec.run_model import load_run_model
    from emorec.serving.export import export_run

    cache = extract_cache(data, tmp_path / "features", f"model.feature_levels={levels}", f"model.pooling={pooling}")
    assert cache.spec["pooling"] == pooling
    result = train(tiny_config(data, tmp_path, "head", "train.epochs=1", "train.head_only=true",
                               f"train.features_dir={cache.root}"))
    loaded = load_run_model(result.run_dir)
    assert (loaded.cfg.model.feature_levels, loaded.cfg.model.pooling) == (levels, pooling), "adopted from the cache"
    val = cache.split("val")
    images = torch.stack([loaded.transform(load_rgb(p)) for p in val.paths])
    cached = torch.from_numpy(np.array(val.pooled[:, 0]))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.forward_vectors(images), cached, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded.model(images), loaded.model.head(cached), rtol=1e-3, atol=1e-4)
    (onnx,) = export_run(result.run_dir, ("onnx",))
    assert onnx.path.is_file()


def test_extract_keys_levels_and_pooling_and_derived_caches_match_direct_extraction(data, tmp_path):
    from emorec.features.variants import derive_cache

    full = extract_cache(data, tmp_path / "a", "model.feature_levels=all", "model.pooling=meanstd")
    last = extract_cache(data, tmp_path / "b")
    assert len({full.key, last.key, extract_cache(data, tmp_path / "c", "model.pooling=meanstd").key}) == 3
    assert "feature_levels" not in last.spec, "a default cache keeps the key it always had"
    derived = derive_cache(full, "last", "avg", tmp_path / "d", log=lambda _m: None)
    assert derived.key == last.key and derived.spec == last.spec
    for split in last.splits:
        a, b = derived.split(split), last.split(split)
        assert a.paths == b.paths and a.views == b.views and np.array_equal(a.labels, b.labels)
        np.testing.assert_allclose(np.asarray(a.pooled), np.asarray(b.pooled), rtol=1e-5, atol=1e-6)
