"""Grad-CAM maps: at the image's size, in [0, 1], not constant, cold where the eval crop cut the
image, for CNN and ViT backbones; and on a task decided by one quadrant, hot in that quadrant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emorec.config import config_from_dict
from emorec.data.transforms import build_eval_transform
from emorec.explain.gradcam import gradcam_map, overlay
from emorec.models.classifier import build_model


def _model(backbone: str, size: int, classes: int = 3, seed: int = 0):
    cfg = config_from_dict({"data": {"image_size": size},
                            "model": {"backbone": backbone, "pretrained": False, "hidden_dims": [16], "dropout": [0.0]}})
    torch.manual_seed(seed)
    return build_model(cfg.model, classes).eval(), build_eval_transform(cfg, [0.5] * 3, [0.25] * 3)


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _quadrant_image(label: int, rng, size: int = 64) -> Image.Image:
    """Noise everywhere; the top-right quadrant is tinted red (label 0) or green (label 1)."""
    pixels = rng.normal(128, 40, (size, size, 3))
    pixels[: size // 2, size // 2 :, label] += 90
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def quadrant_model():
    """A tiny ResNet trained until it tells the two quadrant tints apart (a few seconds)."""
    model, transform = _model("test_resnet", 64, classes=2)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 48)
    images = torch.stack([transform(_quadrant_image(int(y), rng)) for y in labels])
    targets = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(20):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()
    return model.eval(), transform


def _check_map(heat: np.ndarray, image: Image.Image) -> None:
    assert heat.shape == (image.height, image.width) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.05
    picture = overlay(image, heat)
    assert picture.size == image.size and picture.mode == "RGB"


def test_cnn_map_has_the_images_size_and_is_not_constant(quadrant_model):
    model, transform = quadrant_model
    image = _noise(200, 120)
    heat, target = gradcam_map(model, image, transform, target=1)
    assert target == 1
    _check_map(heat, image)


# Untrained models: the heat map of the predicted class (some random seeds leave every class
# without positive evidence, so the map is all zero; seed 0 does not for these two).
@pytest.mark.parametrize("backbone,size", [("test_efficientnet", 64), ("test_vit", 160)])
def test_map_works_for_other_cnns_and_for_vit_token_grids(backbone, size):
    model, transform = _model(backbone, size)
    image = _noise(200, 120)
    heat, target = gradcam_map(model, image, transform)
    assert 0 <= target < 3
    _check_map(heat, image)


def test_default_target_is_the_predicted_class(quadrant_model):
    model, transform = quadrant_model
    image = _noise(80, 80, seed=1)
    with torch.no_grad():
        predicted = int(model(transform(image).unsqueeze(0)).argmax(1))
    assert gradcam_map(model, image, transform)[1] == predicted


def test_what_the_centre_crop_cut_off_stays_cold(quadrant_model):
    model, transform = quadrant_model  # Resize(73) + CenterCrop(64) of a 2:1 image
    heat, _ = gradcam_map(model, _quadrant_image(1, np.random.default_rng(3)).resize((300, 150)), transform)
    # the crop keeps the middle 64 of 146 resized columns: about 88 px of each 300 px side are cut
    assert heat[:, :80].max() == 0.0 and heat[:, -80:].max() == 0.0
    assert heat[:, 100:200].max() > 0.0


def test_overlay_refuses_a_map_of_another_size():
    with pytest.raises(ValueError, match="does not match"):
        overlay(_noise(50, 40), np.zeros((50, 40), np.float32))


def test_heat_concentrates_in_the_quadrant_that_decides_the_label(quadrant_model):
    model, transform = quadrant_model
    rng = np.random.default_rng(1)
    for label in (0, 1):
        test = [_quadrant_image(label, rng) for _ in range(3)]
        with torch.no_grad():
            assert model(torch.stack([transform(im) for im in test])).argmax(1).tolist() == [label] * 3
        for image in test:
            heat, _ = gradcam_map(model, image, transform)
            # top-right quadrant: a quarter of the pixels, at least half of the heat
            assert heat[:32, 32:].sum() > 0.5 * heat.sum()


def _tapped_pieces(split, batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(map, gradient of the top class's score) of what passes through the Grad-CAM tap, cut into
    one piece per backbone of the group (member order, `num_features` channels each)."""
    tapped = []

    def keep(_module, _inputs, outputs):
        for t in (outputs,) if isinstance(outputs, torch.Tensor) else outputs:
            t.retain_grad()
            tapped.append(t)

    handle = split.features.register_forward_hook(keep)
    split(batch).max().backward()
    handle.remove()
    queue = [(t.detach(), t.grad) for t in tapped]
    pieces = []
    for member in split.model.backbone.members:
        width = int(member.num_features)
        assert queue, "a backbone of the group is not tapped"
        value, grad = queue.pop(0)
        if value.shape[1] > width:  # several members stacked in one map
            queue.insert(0, (value[:, width:], grad[:, width:]))
        pieces.append((value[:, :width], grad[:, :width]))
    assert not queue, "more was tapped than the members' deepest maps"
    return pieces


# Mixed families: a ViT's blocks all have the size of its last block and its grid differs from the
# CNN's, so a tap chosen by map size would miss one member or take intermediate blocks.
@pytest.mark.parametrize("backbone,size,levels,pooling", [
    ("test_efficientnet", 64, "all", "meanstd"),
    ("test_efficientnet", 64, "last", "meanstd"),
    ("test_efficientnet+test_efficientnet_ln", 64, "all", "meanstd"),
    ("test_efficientnet+test_efficientnet_ln", 64, "last", "avg"),
    ("test_vit+test_resnet", 160, "all", "meanstd"),
    ("test_resnet+test_vit", 160, "all", "avg"),
    ("test_vit+test_resnet", 160, "last", "avg"),
])
def test_heads_on_several_levels_or_backbones_are_explained_through_the_deepest_maps(backbone, size, levels, pooling):
    """The hooked model computes what the model computes (the tap is an identity on the deepest
    maps, every other level read as it is), the map has the image's size, and in a group every
    member's deepest map is tapped and carries gradient of the explained class."""
    import torch.nn.functional as F

    from emorec.explain.gradcam import _SplitClassifier
    from emorec.models.backbone import feature_map

    cfg = config_from_dict({"data": {"image_size": size},
                            "model": {"backbone": backbone, "pretrained": False, "hidden_dims": [16],
                                      "dropout": [0.0], "feature_levels": levels, "pooling": pooling}})
    torch.manual_seed(0)
    model = build_model(cfg.model, 3).eval()
    transform = build_eval_transform(cfg, [0.5] * 3, [0.25] * 3)
    image = _noise(90, 70)
    batch = transform(image).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(_SplitClassifier(model)(batch), model(batch), atol=1e-5)
    heat, target = gradcam_map(model, image, transform)
    assert 0 <= target < 3 and heat.shape == (70, 90) and np.isfinite(heat).all()
    if "+" not in backbone:
        return
    pieces = _tapped_pieces(_SplitClassifier(model), batch)
    with torch.no_grad():
        for member, (tapped, grad) in zip(model.backbone.members, pieces):
            # the member's own deepest map (averaged to the grid the group stacks it on, if any)
            deepest = F.adaptive_avg_pool2d(feature_map(member, batch), tapped.shape[-2:])
            assert torch.allclose(tapped, deepest, atol=1e-5)
            assert grad.abs().sum() > 0
