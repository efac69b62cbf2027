"""Transforms follow cfg.augment; eval is Resize(size / 0.875) + CenterCrop(size)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from emorec.config import Config
from emorec.data.transforms import build_eval_transform, build_train_transform

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _kinds(transform) -> list[str]:
    return [type(t).__name__ for t in transform.transforms]


def test_default_train_transform_has_the_recipe_steps_in_order():
    cfg = Config()
    cfg.data.image_size = 32
    kinds = _kinds(build_train_transform(cfg, MEAN, STD))
    assert kinds == ["RandomResizedCrop", "RandomHorizontalFlip", "RandomRotation", "ColorJitter",
                     "RandomPerspective", "AutoAugment", "ToTensor", "Normalize", "RandomErasing"]
    crop = build_train_transform(cfg, MEAN, STD).transforms[0]
    assert crop.scale == (cfg.augment.scale_min, 1.0)
    image = Image.new("RGB", (50, 40), (120, 30, 200))
    out = build_train_transform(cfg, MEAN, STD)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("policy, chosen", [("randaugment", {"RandAugment"}), ("trivialaugment", {"TrivialAugmentWide"}),
                                            ("none", set())])
def test_auto_augment_policy_is_selectable(policy, chosen):
    cfg = Config()
    cfg.augment.auto_augment = policy
    kinds = _kinds(build_train_transform(cfg, MEAN, STD))
    assert {"AutoAugment", "RandAugment", "TrivialAugmentWide"} & set(kinds) == chosen


def test_zero_probabilities_drop_their_steps():
    cfg = Config()
    cfg.augment.hflip = cfg.augment.rotation = cfg.augment.color_jitter = 0
    cfg.augment.perspective = cfg.augment.random_erasing = 0
    cfg.augment.auto_augment = "none"
    assert _kinds(build_train_transform(cfg, MEAN, STD)) == ["RandomResizedCrop", "ToTensor", "Normalize"]


def test_eval_transform_resizes_crops_and_normalises():
    cfg = Config()
    cfg.data.image_size = 224
    transform = build_eval_transform(cfg, MEAN, STD)
    assert _kinds(transform) == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert transform.transforms[0].size == 256
    out = transform(Image.new("RGB", (400, 300), (255, 255, 255)))
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out, torch.full_like(out, (1 - 0.5) / 0.25))
    assert isinstance(transform, T.Compose)
