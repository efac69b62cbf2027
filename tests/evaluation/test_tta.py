"""TTA averages softmax over the configured views; checked on models with a known output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emorec.config import EvalConfig
from emorec.data.transforms import build_eval_transform, ten_crop_input_transform
from emorec.data.views import crop_box, ten_crop_boxes
from emorec.errors import EmorecError
from emorec.evaluation.tta import (logits_and_tta_probabilities, num_views, resolve_tta, ten_crop_views,
                                   tta_probabilities, tta_views)


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


# -- ten-crop ---------------------------------------------------------------------------------


def _numbered(full=54):
    """(2, 3, full, full) with every element distinct, so a crop's values say where it came from."""
    return torch.arange(2 * 3 * full * full, dtype=torch.float32).reshape(2, 3, full, full)


def test_ten_crop_gives_ten_views_of_the_crop_size():
    views = ten_crop_views(_numbered(54), 48)
    assert len(views) == 10 == num_views(EvalConfig(tta_mode="ten-crop"))
    assert all(v.shape == (2, 3, 48, 48) for v in views)


@pytest.mark.parametrize("full,side,boxes", [
    (54, 48, [(3, 3), (0, 0), (0, 6), (6, 0), (6, 6)]),  # FER at 48 px: resize to int(48 / 0.875) = 54
    (73, 64, [(4, 4), (0, 0), (0, 9), (9, 0), (9, 9)]),  # odd margin: the centre rounds like CenterCrop
])
def test_ten_crop_geometry_is_centre_then_corners_then_their_mirrors(full, side, boxes):
    assert ten_crop_boxes(full, side) == boxes
    x = _numbered(full)
    views = ten_crop_views(x, side)
    for view, (top, left) in zip(views[:5], boxes):
        assert torch.equal(view, x[:, :, top : top + side, left : left + side])
    for crop, mirror in zip(views[:5], views[5:]):
        assert torch.equal(mirror, crop.flip(3))


def test_a_window_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        ten_crop_boxes(40, 48)


@pytest.mark.parametrize("size,width,height", [(48, 48, 48), (64, 48, 48), (48, 90, 61)])
def test_the_first_ten_crop_view_is_the_eval_crop(size, width, height):
    from emorec.config import Config

    cfg = Config()
    cfg.data.image_size = size
    mean, std = [0.5] * 3, [0.5] * 3
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    eval_view = build_eval_transform(cfg, mean, std)(image)
    whole = ten_crop_input_transform(build_eval_transform(cfg, mean, std))(image)
    assert whole.shape[-1] == int(size / 0.875)
    first = ten_crop_views(whole[None], size)[0][0]
    # Square images give the eval crop exactly; others are squared first, which may shift it by a pixel.
    if width == height:
        assert torch.equal(first, eval_view)
    else:
        assert first.shape == eval_view.shape


class TopLeftModel(torch.nn.Module):
    """Logits (v, 0, -v) from the view's top-left value v, so every view predicts differently."""

    def forward(self, x):
        v = x[:, 0, 0, 0] / x.numel()
        return torch.stack([v, torch.zeros_like(v), -v], dim=1)


def test_ten_crop_probabilities_are_the_mean_softmax_of_the_ten_views():
    x = _numbered(54)
    model = TopLeftModel()
    logits, probs = logits_and_tta_probabilities(model, x, EvalConfig(tta_mode="ten-crop"), crop_size=48)
    expected = torch.stack([torch.softmax(model(v), 1) for v in ten_crop_views(x, 48)]).mean(0)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert not torch.allclose(probs, torch.softmax(logits, 1))  # the views do differ
    assert torch.allclose(logits, model(x[:, :, 3:51, 3:51]))  # logits of the centre view


def test_ten_crop_needs_the_crop_size():
    with pytest.raises(ValueError, match="crop_size"):
        tta_probabilities(TopLeftModel(), _numbered(54), EvalConfig(tta_mode="ten-crop"))


def test_the_mode_follows_the_config_unless_named():
    cfg = EvalConfig(tta=True, tta_mode="views")
    assert resolve_tta(None, cfg) == "views" and resolve_tta(True, cfg) == "views"
    assert resolve_tta("ten-crop", cfg) == "ten-crop" and resolve_tta(False, cfg) is None
    assert resolve_tta(None, EvalConfig(tta=False)) is None
    with pytest.raises(EmorecError, match="ten-crop"):
        resolve_tta("five-crop", cfg)
