"""TTA averages softmax over the configured views; checked on models with a known output."""

from __future__ import annotations

import torch

from emorec.config import EvalConfig
from emorec.data.views import crop_box
from emorec.evaluation.tta import logits_and_tta_probabilities, tta_probabilities, tta_views


class LeftRightModel(torch.nn.Module):
    """Class 0 logit = mean of the left half, class 1 logit = mean of the right half."""

    def forward(self, x):
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], dim=1)


def _left_bright(size=16):
    x = torch.zeros(1, 3, size, size)
    x[..., : size // 2] = 4.0
    return x


def test_original_view_only_gives_plain_softmax():
    x = _left_bright()
    probs = tta_probabilities(LeftRightModel(), x, EvalConfig(tta_hflip=False, tta_crops=0))
    assert torch.allclose(probs, torch.softmax(LeftRightModel()(x), 1))


def test_hflip_averages_the_mirrored_prediction():
    # The mirror swaps the halves, so the two views are exact opposites and average to 0.5 each.
    probs = tta_probabilities(LeftRightModel(), _left_bright(), EvalConfig(tta_hflip=True, tta_crops=0))
    assert torch.allclose(probs, torch.tensor([[0.5, 0.5]]), atol=1e-6)


def test_views_count_and_shape_follow_the_config():
    x = torch.rand(2, 3, 32, 32)
    views = tta_views(x, hflip=True, crops=5)
    assert len(views) == 7
    assert all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(3))


def test_crops_are_centre_then_corners():
    assert crop_box(32, 0) == (2, 2, 28)
    assert crop_box(32, 1) == (0, 0, 28)
    assert crop_box(32, 4) == (4, 4, 28)


def test_logits_are_from_the_original_view():
    x = _left_bright()
    logits, probs = logits_and_tta_probabilities(LeftRightModel(), x, EvalConfig(tta_hflip=True, tta_crops=2))
    assert torch.allclose(logits, LeftRightModel()(x))
    assert torch.allclose(probs.sum(1), torch.ones(1))
