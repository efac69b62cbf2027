"""Backbone groups (`model.backbone: a+b`): one model of several backbones side by side, whose
vector is its members' vectors in turn, and whose feature cache is the members' caches joined
(what `emorec fit` tries as "every backbone together")."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emorec.api import train
from emorec.config import Config
from emorec.errors import EmorecError
from emorec.models import build_model
from emorec.models.backbone import backbone_levels, create_backbone, level_channels
from emorec.models.backbone_group import group_columns
from emorec.models.pooling import pool_levels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import data, one_thread, tiny_config  # noqa: E402,F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")
# Two timm test models that expect the same (ImageNet) normalisation.
MEMBERS = ("test_efficientnet", "test_efficientnet_ln")


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> list[str]:
    """Fixed weights per member (what the Lite .safetensors files are in real use), so separate
    extractions and the group's own build hold the same backbones."""
    folder = tmp_path_factory.mktemp("weights")
    files = []
    for i, name in enumerate(MEMBERS):
        torch.manual_seed(100 + i)
        path = folder / f"{name}.pth"
        torch.save(create_backbone(name).state_dict(), path)
        files.append(str(path))
    return files


def group_config(*extra: str) -> Config:
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained = "+".join(MEMBERS), False
    cfg.model.hidden_dims, cfg.model.dropout = [8], [0.0]
    for item in extra:
        key, value = item.split("=")
        setattr(cfg.model, key, value)
    return cfg


@pytest.mark.parametrize("levels, pooling", [("last", "avg"), ("last", "meanstd"), ("all", "meanstd"), ("all", "gem")])
def test_a_group_pools_to_its_members_vectors_in_turn(levels, pooling):
    model = build_model(group_config(f"feature_levels={levels}", f"pooling={pooling}").model, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    members = model.backbone.members
    with torch.no_grad():
        own = [pool_levels(backbone_levels(m, x) if levels == "all" else backbone_levels(m, x)[-1:], pooling)
               for m in members]
        channels = [level_channels(m) if levels == "all" else [m.num_features] for m in members]
        expected = torch.cat([own[i][:, cols] for i, cols in group_columns(channels, levels, pooling)], dim=1)
        torch.testing.assert_close(model.forward_vectors(x), expected)
        assert model.forward_features(x).shape[1] == model.backbone.num_features == sum(m.num_features for m in members)
        assert model(x).shape == (2, 3)


def test_group_errors_name_the_fix(weight_files):
    with pytest.raises(EmorecError, match="different input mean"):
        create_backbone("test_efficientnet+test_resnet")
    with pytest.raises(EmorecError, match="two or more timm names"):
        create_backbone("test_efficientnet+")
    with pytest.raises(EmorecError, match="names 1 file"):
        create_backbone("+".join(MEMBERS), weights=weight_files[0])


def test_layer_decay_sees_every_members_stages():
    from emorec.training.optim import backbone_stages

    group = create_backbone("+".join(MEMBERS))
    stages, count = backbone_stages(group)
    assert set(stages) == {name for name, _ in group.named_parameters()}
    assert count == max(backbone_stages(m)[1] for m in group.members)


@pytest.mark.parametrize("levels, pooling", [("last", "avg"), ("all", "meanstd")])
def test_combined_caches_are_what_the_group_extracts_and_its_head_serves_pixels(data, tmp_path, weight_files,
                                                                               levels, pooling):
    from emorec.data.imageio import load_rgb
    from emorec.features.combine import combine_caches
    from emorec.features.extract import extract_features
    from emorec.run_model import load_run_model

    cfg = tiny_config(data, tmp_path, "unused", f"model.feature_levels={levels}", f"model.pooling={pooling}")

    def extract(backbone, weights, folder):
        return extract_features(str(data), backbone, weights=weights, image_size=32, augmented_views=1, grid=0,
                                cache_dir=tmp_path / folder, cfg=cfg, num_workers=0, dtype="float32", progress=False,
                                log=lambda _m: None, feature_levels=levels, pooling=pooling)

    members = [extract(name, w, f"m{i}") for i, (name, w) in enumerate(zip(MEMBERS, weight_files))]
    combined = combine_caches(members, tmp_path / "combined", log=lambda _m: None)
    direct = extract("+".join(MEMBERS), "+".join(weight_files), "direct")
    assert combined.key == direct.key and combined.spec == direct.spec
    for split in direct.splits:
        a, b = combined.split(split), direct.split(split)
        assert a.paths == b.paths and a.views == b.views and np.array_equal(a.labels, b.labels)
        np.testing.assert_allclose(np.asarray(a.pooled), np.asarray(b.pooled), rtol=1e-4, atol=1e-5)

    result = train(tiny_config(data, tmp_path, "head", "train.epochs=1", "train.head_only=true",
                               f"train.features_dir={combined.root}"))
    loaded = load_run_model(result.run_dir)
    assert loaded.cfg.model.backbone == "+".join(MEMBERS)
    val = combined.split("val")
    images = torch.stack([loaded.transform(load_rgb(p)) for p in val.paths])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.forward_vectors(images), torch.from_numpy(np.array(val.pooled[:, 0])),
                                   rtol=1e-4, atol=1e-5)


def test_caches_of_different_images_are_not_combined(data, tmp_path, weight_files):
    from emorec.features.combine import combine_caches
    from emorec.features.extract import extract_features

    def extract(name, weights, size):
        return extract_features(str(data), name, weights=weights, image_size=size, grid=0, cache_dir=tmp_path,
                                cfg=tiny_config(data, tmp_path, "unused"), num_workers=0, progress=False,
                                log=lambda _m: None)

    with pytest.raises(EmorecError, match="differ in .*image_size"):
        combine_caches([extract(MEMBERS[0], weight_files[0], 32), extract(MEMBERS[1], weight_files[1], 48)], tmp_path)
