"""`augment.backend=tensor`: workers decode and resize, `BatchAugment` runs the recipe on the batch
with its own random parameters per image, reproducibly from a seed."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from emorec.config import Config
from emorec.data.batch_augment import BatchAugment, PerImagePolicy, _operations, build_decode_transform

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]
SIZE = 32  # decode side: int(32 / 0.875) = 36


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**augment) -> Config:
    cfg = Config()
    cfg.data.image_size = SIZE
    for key, value in augment.items():
        setattr(cfg.augment, key, value)
    return cfg


def nothing_but(**augment) -> Config:
    """Every optional step off (RandomResizedCrop stays), then `augment` on."""
    off = dict(hflip=0.0, rotation=0.0, color_jitter=0.0, perspective=0.0, auto_augment="none", random_erasing=0.0)
    return config(**{**off, **augment})


def textured(count: int, side: int = 36) -> torch.Tensor:
    """`count` copies of one uint8 image with structure (gradients and noise), so that every
    geometric or colour change shows."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    base = torch.stack([xx * 6, yy * 6, (xx + yy) * 3]).float() + torch.rand(3, side, side, generator=g) * 40
    return base.clamp(0, 255).to(torch.uint8).expand(count, -1, -1, -1).contiguous()


def all_different(batch: torch.Tensor) -> bool:
    return all(not torch.equal(a, b) for a, b in itertools.combinations(batch, 2))


def test_workers_decode_to_a_uint8_square_with_room_for_the_crop():
    out = build_decode_transform(config())(Image.new("RGB", (80, 50), (10, 200, 30)))
    assert out.dtype == torch.uint8 and out.shape == (3, 36, 36)
    assert out[:, 18, 18].tolist() == [10, 200, 30]


def test_the_recipe_gives_normalised_float_batches_of_the_image_size():
    out = BatchAugment(config(), MEAN, STD)(textured(6), seed=0)
    assert out.shape == (6, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("step", [
    dict(scale_min=0.5),  # the crop alone
    dict(rotation=15.0),
    dict(color_jitter=0.3),
    dict(perspective=0.3, perspective_p=1.0),
    dict(),  # nothing_but() with the recipe's defaults: everything on
])
def test_every_image_of_a_batch_gets_its_own_random_parameters(step):
    cfg = config() if not step else nothing_but(**step)
    out = BatchAugment(cfg, MEAN, STD)(textured(8), seed=3)
    assert all_different(out), f"identical inputs must come out different with {step or 'the recipe'}"


def test_the_same_seed_gives_the_same_batch_and_leaves_the_callers_rng_alone():
    augment, images = BatchAugment(config(), MEAN, STD), textured(4)
    state = torch.get_rng_state()
    first = augment(images, seed=11)
    assert torch.equal(torch.get_rng_state(), state), "dropout and MixUp draws must not shift"
    assert torch.equal(augment(images, seed=11), first)
    assert torch.equal(BatchAugment(config(), MEAN, STD)(images, seed=11), first), "a rebuilt augmentation too"
    assert not torch.equal(augment(images, seed=12), first)


def test_with_every_random_step_off_a_plain_image_is_only_normalised():
    grey = torch.full((2, 3, 36, 36), 128, dtype=torch.uint8)
    out = BatchAugment(nothing_but(), MEAN, STD)(grey, seed=0)
    expected = (128 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5, rtol=0)


def test_erasing_fills_boxes_with_noise():
    grey = torch.full((8, 3, 36, 36), 128, dtype=torch.uint8)
    out = BatchAugment(nothing_but(random_erasing=1.0), MEAN, STD)(grey, seed=0)
    plain = ((128 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    erased = ~torch.isclose(out, plain.expand_as(out), atol=1e-5).all(dim=1)  # (B, H, W) pixels changed
    assert erased.flatten(1).any(dim=1).all(), "p=1: every image has a box"
    assert erased.float().mean() < 0.5, "a box, not the whole image"


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_each_automatic_policy_runs_on_the_batch(policy):
    out = BatchAugment(nothing_but(auto_augment=policy), MEAN, STD)(textured(8), seed=5)
    assert out.shape == (8, 3, SIZE, SIZE) and torch.isfinite(out).all()


def test_the_policy_is_drawn_per_image_not_per_batch():
    # Two sub-policies: invert the image, or leave it. torchvision and kornia pick one for the
    # whole batch (all inverted or none); drawn per image, a batch of 32 holds both.
    policy = PerImagePolicy([[("Invert", 1.0, None)], [("Invert", 0.0, None)]], {"Invert": (torch.tensor(0.0), False)})
    images = torch.full((32, 3, 4, 4), 0.2)
    torch.manual_seed(0)
    out = policy(images)
    inverted = torch.isclose(out, torch.full_like(out, 0.8)).flatten(1).all(dim=1)
    untouched = torch.isclose(out, images).flatten(1).all(dim=1)
    assert bool((inverted | untouched).all())
    assert 0 < int(inverted.sum()) < 32


@pytest.mark.parametrize("name", sorted(set(_operations())))
def test_each_policy_operation_takes_one_magnitude_per_image(name):
    x = textured(2).float() / 255
    magnitudes = {"Posterize": [8.0, 2.0], "Solarize": [255.0, 64.0], "TranslateX": [0.0, 5.0],
                  "TranslateY": [0.0, 5.0], "Rotate": [0.0, 30.0]}.get(name, [0.0, 0.6])
    out = _operations()[name](x, torch.tensor(magnitudes))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[1], x[1], atol=1e-3), f"{name} with a non-zero magnitude changes the image"
    if name not in ("AutoContrast", "Equalize", "Invert"):  # these have no magnitude
        torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0, msg=f"{name} at magnitude 0 is the identity")


def test_only_uint8_batches_are_accepted():
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment(config(), MEAN, STD)(torch.zeros(2, 3, 36, 36), seed=0)
