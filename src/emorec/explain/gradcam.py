"""Grad-CAM heat maps (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017) for an `EmotionClassifier`, computed by Captum's
`LayerGradCam` on the deepest feature map the head reads.

`EmotionClassifier.forward_features` / `forward_levels` return (B, C, h, w) maps for every
backbone (a ViT's patch tokens folded to their grid, prefix tokens dropped), so one layer choice
serves CNNs and ViTs alike: a thin wrapper passes the deepest map (each member's, for a group of
backbones) through a module for Captum to hook. The map covers what the model saw (the
eval transform's resize and centre crop); it is mapped back onto the photo's own pixels, and the
border the crop cut off stays cold.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn


class _Tap(nn.Module):
    """Identity on any number of maps: the one module Captum hooks, so the activations and
    gradients of every tapped map come out of one `LayerGradCam` call, one attribution per map."""

    def forward(self, *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return maps


class _SplitClassifier(nn.Module):
    """model(x) with the deepest feature map passed through `features`, a `_Tap` that Captum can
    attach its hooks to. A head that pools several levels (`model.feature_levels=all`) reads the
    others unchanged; with several backbones side by side (`a+b`) every member's deepest map is
    tapped, so the heat map covers all of them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.features = _Tap()
        self.model = model
        # With the last level only, forward_levels is that one (possibly stacked) map.
        self.deepest = _deepest_levels(model.backbone) if model.feature_levels == "all" else [0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.model.head_pools:
            # A group's last map already holds every member's deepest map (stacked by the group).
            return self.model.forward_head(self.features(self.model.forward_features(x))[0])
        from emorec.models.pooling import pool_levels

        levels = list(self.model.forward_levels(x))
        for i, tapped in zip(self.deepest, self.features(*(levels[i] for i in self.deepest))):
            levels[i] = tapped
        return self.model.forward_head(pool_levels(levels, self.model.pooling))


def _deepest_levels(backbone: nn.Module) -> list[int]:
    """Indices of each backbone's deepest map among its `backbone_levels`, member after member for
    a group. Found by counting each member's levels, not by map size: the members of a group may
    end on grids of different sizes (a ViT's 14 x 14 beside a CNN's 7 x 7), and a ViT's every
    block has the size of its last."""
    from emorec.models.backbone import level_channels
    from emorec.models.backbone_group import BackboneGroup

    members = list(backbone.members) if isinstance(backbone, BackboneGroup) else [backbone]
    ends, total = [], 0
    for member in members:
        total += len(level_channels(member))
        ends.append(total - 1)
    return ends


def _combined_cam(cams: tuple[torch.Tensor, ...]) -> np.ndarray:
    """One (h, w) map from each tapped map's channel-summed Grad-CAM, at the finest grid among them.

    Summed before the ReLU, as Grad-CAM sums over channels: maps of one size give exactly the
    Grad-CAM of their concatenation; coarser maps are resized (bilinearly) to the finest grid first.
    """
    maps = [cam.detach().float().cpu().numpy()[0].sum(0) for cam in cams]
    height, width = max((m.shape for m in maps), key=lambda shape: shape[0] * shape[1])
    total = sum(m if m.shape == (height, width) else _resize_map(m, width, height) for m in maps)
    return np.maximum(total, 0.0)


def _crop_geometry(transform, width: int, height: int) -> tuple[int, int, int, int, int, int]:
    """(resized width, resized height, crop left, crop top, crop width, crop height) of the eval
    transform (Resize + CenterCrop) on a width x height image, with torchvision's rounding."""
    from emorec.data.preprocess import Preprocessing

    prep = Preprocessing.from_transform(transform, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    rw, rh = prep.resized_size(width, height)
    ch, cw = prep.crop
    return rw, rh, int(round((rw - cw) / 2.0)), int(round((rh - ch) / 2.0)), cw, ch


def _resize_map(values: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(values.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR))


def gradcam_map(model: nn.Module, image: Image.Image, eval_transform, target: int | None = None) -> tuple[np.ndarray, int]:
    """(heat, target index): Grad-CAM of class `target` (default: the predicted class) as an
    (H, W) float array in [0, 1] at the image's own size (1 = the most class-relevant region)."""
    from captum.attr import LayerGradCam

    image = image.convert("RGB")
    split = _SplitClassifier(model)
    device = next(model.parameters()).device
    batch = eval_transform(image).unsqueeze(0).to(device)
    with torch.enable_grad():
        if target is None:
            with torch.no_grad():
                target = int(model(batch).argmax(1).item())
        # Captum differentiates the score w.r.t. the hooked map; an input that requires grad
        # keeps the graph alive even when every backbone weight is frozen.
        batch.requires_grad_(True)
        cams = LayerGradCam(split, split.features).attribute(batch, target=int(target), relu_attributions=False)
    cam = _combined_cam(cams if isinstance(cams, tuple) else (cams,))  # (h, w), >= 0
    width, height = image.size
    rw, rh, left, top, cw, ch = _crop_geometry(eval_transform, width, height)
    seen = _resize_map(cam, cw, ch)
    canvas = np.zeros((rh, rw), np.float32)
    # Intersect the crop with the resized image (a tiny image is padded, not cropped).
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ch, rh), min(left + cw, rw)
    canvas[y0:y1, x0:x1] = seen[y0 - top : y1 - top, x0 - left : x1 - left]
    heat = _resize_map(canvas, width, height)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    return np.clip(heat, 0.0, 1.0), int(target)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The image blended with the heat map in matplotlib's 'jet' colours (red = hot); same size."""
    from matplotlib import colormaps

    image = image.convert("RGB")
    if heat.shape != (image.height, image.width):
        raise ValueError(f"heat map {heat.shape} does not match the image ({image.height}, {image.width})")
    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * np.asarray(image, np.float32) + alpha * colours
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
