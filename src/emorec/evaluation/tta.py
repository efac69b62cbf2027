"""Test-time augmentation: average the softmax of a model over a few views of each image.

Views are built from the already pre-processed batch (B, C, S, S): the original, its horizontal
mirror, and `crops` zoomed crops (see `views.crop_box`: centre, then the four corners, each
resized back to S). Averaging probabilities rather than logits keeps one
over-confident view from dominating (the usual choice, e.g. in timm's validation TTA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emorec.config import EvalConfig
from emorec.data.views import crop_box


def tta_views(images: torch.Tensor, hflip: bool = True, crops: int = 0) -> list[torch.Tensor]:
    """The list of views of a batch (B, C, H, W); the first one is always the batch itself."""
    views = [images]
    if hflip:
        views.append(torch.flip(images, dims=[3]))
    size = images.shape[-1]
    for i in range(crops):
        top, left, side = crop_box(size, i)
        patch = images[:, :, top : top + side, left : left + side]
        views.append(F.interpolate(patch, size=images.shape[-2:], mode="bilinear", align_corners=False))
    return views


def num_views(eval_cfg: EvalConfig) -> int:
    return 1 + int(eval_cfg.tta_hflip) + eval_cfg.tta_crops


@torch.no_grad()
def logits_and_tta_probabilities(
    model: torch.nn.Module, images: torch.Tensor, eval_cfg: EvalConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the original view, mean softmax over all TTA views), both (B, K).

    The evaluator reports with and without TTA side by side; the original view is the first TTA
    view, so both come from one pass over the views.
    """
    views = tta_views(images, hflip=eval_cfg.tta_hflip, crops=eval_cfg.tta_crops)
    logits = model(views[0]).float()
    total = torch.softmax(logits, dim=1)
    for view in views[1:]:
        total = total + torch.softmax(model(view).float(), dim=1)
    return logits, total / len(views)


def tta_probabilities(model: torch.nn.Module, images: torch.Tensor, eval_cfg: EvalConfig) -> torch.Tensor:
    """Mean softmax over the TTA views of `images` -> (B, K) probabilities."""
    return logits_and_tta_probabilities(model, images, eval_cfg)[1]
