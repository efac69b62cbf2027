"""MixUp / CutMix: soft targets of the right shape that the losses accept."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from emorec.config import AugmentConfig
from emorec.errors import EmorecError
from emorec.training.losses import FocalLoss
from emorec.training.mixing import build_mixup, mix_batch


def test_mixed_targets_are_probability_vectors_over_the_classes():
    torch.manual_seed(0)
    mixup = build_mixup(AugmentConfig(), num_classes=6, label_smoothing=0.0)
    images, labels = torch.rand(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    mixed, targets = mixup(images.clone(), labels)
    assert mixed.shape == images.shape and targets.shape == (8, 6)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    # Each sample is paired with its mirror: sample i's target is lam * y_i + (1 - lam) * y_(B-1-i).
    onehot = F.one_hot(labels, 6).float()
    lam = float(targets[0, 0])  # sample 0 (class 0) is paired with sample 7 (class 1)
    assert 0.0 < lam < 1.0
    assert torch.allclose(targets, lam * onehot + (1 - lam) * onehot.flip(0), atol=1e-6)
    assert torch.isfinite(FocalLoss(label_smoothing=0.1)(torch.randn(8, 6), targets))


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0)])
def test_mixup_only_and_cutmix_only(mixup_alpha, cutmix_alpha):
    torch.manual_seed(1)
    cfg = dataclasses.replace(AugmentConfig(), mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    mixed, targets = build_mixup(cfg, 3)(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]))
    assert targets.shape == (4, 3) and torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_smoothing_in_the_mixer_spreads_eps_over_the_classes():
    cfg = dataclasses.replace(AugmentConfig(), mix_prob=1.0, mixup_alpha=0.4, cutmix_alpha=0.0)
    _, targets = build_mixup(cfg, 4, label_smoothing=0.2)(torch.rand(2, 3, 8, 8), torch.tensor([1, 1]))
    # Both samples have label 1: whatever lam is, the target is the smoothed one-hot.
    assert torch.allclose(targets, torch.tensor([[0.05, 0.85, 0.05, 0.05]] * 2))


def test_no_mixing_gives_none():
    assert build_mixup(dataclasses.replace(AugmentConfig(), mixup_alpha=0.0, cutmix_alpha=0.0), 5) is None
    assert build_mixup(dataclasses.replace(AugmentConfig(), mix_prob=0.0), 5) is None


@pytest.mark.parametrize("n", [1, 3, 7])
def test_odd_batches_keep_every_sample(n):
    mixer = build_mixup(AugmentConfig(), 3)
    with pytest.raises(AssertionError):  # timm alone refuses an odd batch
        mixer(torch.rand(n, 3, 8, 8), torch.arange(n) % 3)
    x, y = torch.rand(n, 3, 8, 8), torch.arange(n) % 3
    last = x[-1].clone()
    mixed, targets = mix_batch(mixer, x, y)
    assert mixed.shape == (n, 3, 8, 8) and targets.shape == (n, 3)
    torch.testing.assert_close(targets.sum(1), torch.ones(n))
    assert torch.equal(mixed[-1], last) and targets[-1].tolist() == F.one_hot(y[-1], 3).float().tolist()


def test_feature_vectors_get_mixup_but_never_cutmix():
    only_cutmix = dataclasses.replace(AugmentConfig(), mixup_alpha=0.0, cutmix_alpha=1.0)
    assert build_mixup(only_cutmix, 3, spatial=False) is None
    mixer = build_mixup(AugmentConfig(), 3, spatial=False)
    assert mixer.cutmix_alpha == 0.0 and mixer.mixup_alpha > 0
    mixed, targets = mix_batch(mixer, torch.rand(5, 16), torch.arange(5) % 3)
    assert mixed.shape == (5, 16) and targets.shape == (5, 3)


def test_bad_mixing_settings_are_user_errors():
    with pytest.raises(EmorecError, match="augment.switch_prob"):
        build_mixup(dataclasses.replace(AugmentConfig(), switch_prob=1.5), 3)
    with pytest.raises(EmorecError, match="augment.mixup_alpha"):
        build_mixup(dataclasses.replace(AugmentConfig(), mixup_alpha=-1.0), 3)
