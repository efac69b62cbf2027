"""The whole model: build from config, parameter counts, signature, backbone freezing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emorec.config import Config, ModelConfig
from emorec.errors import EmorecError
from emorec.models import build_model, model_signature, parameter_summary, set_backbone_trainable


def tiny_cfg(**changes) -> ModelConfig:
    base = ModelConfig(backbone="test_resnet", pretrained=False, hidden_dims=[32, 16], dropout=[0.2, 0.1])
    return dataclasses.replace(base, **changes)


def test_forward_is_head_of_features():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), 4).eval()
    x = torch.randn(2, 3, 64, 64)
    fmap = model.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[1] == model.backbone.num_features
    assert torch.allclose(model(x), model.forward_head(fmap))
    assert model(x).shape == (2, 4)


@pytest.mark.slow
def test_resnet50_recipe_model_has_about_26_8_million_parameters():
    model = build_model(ModelConfig(pretrained=False), 8)
    summary = parameter_summary(model)
    assert 26.7e6 <= summary["total"] <= 26.85e6
    assert summary["trainable"] == summary["total"]
    # float32: 4 bytes a parameter, plus BatchNorm buffers.
    assert 4 * summary["total"] / 1e6 < summary["size_mb"] < 4 * summary["total"] / 1e6 + 1


def test_frozen_backbone_trains_only_the_head_with_fixed_batchnorm_statistics():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), 3)
    head_params = sum(p.numel() for p in model.head.parameters())
    set_backbone_trainable(model, False)
    assert parameter_summary(model)["trainable"] == head_params
    model.train()
    assert model.head.training and not model.backbone.training
    stats = model.backbone.bn1.running_mean.clone()
    loss = model(torch.randn(4, 3, 64, 64)).sum()
    loss.backward()
    assert torch.equal(model.backbone.bn1.running_mean, stats)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())

    set_backbone_trainable(model, True)
    model.train()
    assert model.backbone.training
    assert parameter_summary(model)["trainable"] == parameter_summary(model)["total"]


def test_signature_names_what_decides_the_state_dict_layout():
    cfg = Config()
    sig = model_signature(cfg, 8)
    assert sig == {"backbone": "resnet50", "attention": True, "hidden_dims": [1024, 512, 256], "num_classes": 8}
    assert model_signature(cfg.model, 8) == sig  # a Config or its model section
    assert model_signature(dataclasses.replace(cfg.model, backbone="convnext_tiny"), 8) != sig


def test_inconsistent_head_settings_are_user_errors():
    with pytest.raises(EmorecError, match="model.dropout has 1 rates for 2 hidden layers"):
        build_model(tiny_cfg(dropout=[0.1]), 3)
    with pytest.raises(EmorecError, match="model.dropout"):
        build_model(tiny_cfg(dropout=[1.5, 0.1]), 3)
