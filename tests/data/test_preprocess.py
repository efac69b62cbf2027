"""The PIL + numpy preprocessing used without torch reproduces the torchvision eval transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from emorec.errors import EmorecError
from emorec.data.transforms import ten_crop_input_transform
from emorec.evaluation.tta import ten_crop_views, tta_views
from emorec.data.preprocess import Preprocessing, ten_crop_views_numpy, tta_views_numpy

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _eval_transform(size, interpolation):
    return T.Compose([
        T.Resize(int(size / 0.875), interpolation=interpolation), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD),
    ])


def _photo(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("interpolation", [T.InterpolationMode.BILINEAR, T.InterpolationMode.BICUBIC])
@pytest.mark.parametrize("width,height", [(97, 61), (50, 130), (36, 36), (20, 25)])
def test_matches_torchvision(width, height, interpolation):
    transform = _eval_transform(32, interpolation)
    pre = Preprocessing.from_transform(transform, MEAN, STD)
    assert pre.resize == [36] and pre.crop == [32, 32] and pre.interpolation == interpolation.value
    image = _photo(width, height)
    ours = pre(image)
    theirs = transform(image).numpy()
    assert ours.shape == theirs.shape == (3, 32, 32) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_round_trips_through_a_dict():
    pre = Preprocessing.from_transform(_eval_transform(64, T.InterpolationMode.BICUBIC), MEAN, STD)
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_a_transform_without_resize_and_crop_is_refused():
    with pytest.raises(EmorecError, match="Resize"):
        Preprocessing.from_transform(T.Compose([T.ToTensor()]), MEAN, STD)


def test_numpy_tta_views_match_the_torch_ones():
    batch = np.random.default_rng(0).normal(0, 1, (2, 3, 32, 32)).astype(np.float32)
    ours = tta_views_numpy(batch, hflip=True, crops=3)
    theirs = tta_views(torch.from_numpy(batch), hflip=True, crops=3)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)


@pytest.mark.parametrize("width,height", [(48, 48), (97, 61)])
def test_numpy_ten_crop_matches_the_torch_one(width, height):
    transform = _eval_transform(48, T.InterpolationMode.BICUBIC)
    pre = Preprocessing.from_transform(transform, MEAN, STD)
    image = _photo(width, height)
    whole = pre.ten_crop_input()(image)
    np.testing.assert_allclose(whole, ten_crop_input_transform(transform)(image).numpy(), atol=1e-5)
    ours = ten_crop_views_numpy(whole[None], pre.input_size)
    theirs = ten_crop_views(torch.from_numpy(whole[None]), 48)
    assert len(ours) == len(theirs) == 10
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b.numpy())
