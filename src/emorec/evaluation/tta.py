"""Test-time augmentation: average the softmax of a model over a few views of each image.

Two modes (`eval.tta_mode`, or `emorec evaluate --tta MODE`):
- `views`: from the pre-processed batch (B, C, S, S): the original, its horizontal mirror
  (`eval.tta_hflip`), and `eval.tta_crops` zoomed crops (see `views.crop_box`: centre, then the
  four corners, each resized back to S).
- `ten-crop`: the loader gives the whole resized square (B, C, F, F), F = int(S / 0.875)
  (`data.transforms.ten_crop_input_transform`); the views are its centre and four corner crops of
  side S and their mirrors, cut without resampling (torchvision's TenCrop, the FER-2013 standard).
  The centre crop is the eval transform's crop, so view 0 is the single-view prediction.

Averaging probabilities rather than logits keeps one over-confident view from dominating (the
usual choice, e.g. in timm's validation TTA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emorec.config import EvalConfig
from emorec.data.views import TEN_CROP, TEN_CROP_VIEWS, TTA_MODES, crop_box, ten_crop_boxes
from emorec.errors import EmorecError


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


def ten_crop_views(images: torch.Tensor, side: int) -> list[torch.Tensor]:
    """Ten views (B, C, side, side) of a batch of whole resized squares (B, C, F, F): the centre
    and the four corners, then their mirrors in the same order."""
    crops = [images[:, :, top : top + side, left : left + side] for top, left in ten_crop_boxes(images.shape[-1], side)]
    return crops + [torch.flip(c, dims=[3]) for c in crops]


def resolve_tta(tta: bool | str | None, eval_cfg: EvalConfig) -> str | None:
    """The TTA mode to use, or None for none: `None` follows `eval.tta` (and `eval.tta_mode`),
    True means `eval.tta_mode`, a string names the mode."""
    if tta is None:
        tta = eval_cfg.tta
    if tta is False:
        return None
    if tta is True:
        return eval_cfg.tta_mode
    if tta not in TTA_MODES:
        raise EmorecError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    return tta


def num_views(eval_cfg: EvalConfig, mode: str | None = None) -> int:
    if (mode or eval_cfg.tta_mode) == TEN_CROP:
        return TEN_CROP_VIEWS
    return 1 + int(eval_cfg.tta_hflip) + eval_cfg.tta_crops


def views_of(images: torch.Tensor, eval_cfg: EvalConfig, mode: str | None = None,
             crop_size: int | None = None) -> list[torch.Tensor]:
    """The TTA views of `images` in `mode` (default `eval.tta_mode`); ten-crop needs the eval
    crop size (the images are the larger resized squares)."""
    if (mode or eval_cfg.tta_mode) == TEN_CROP:
        if crop_size is None:
            raise ValueError("ten-crop TTA needs crop_size (the eval crop, data.image_size)")
        return ten_crop_views(images, crop_size)
    return tta_views(images, hflip=eval_cfg.tta_hflip, crops=eval_cfg.tta_crops)


@torch.no_grad()
def logits_and_tta_probabilities(
    model: torch.nn.Module, images: torch.Tensor, eval_cfg: EvalConfig, mode: str | None = None,
    crop_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the original view, mean softmax over all TTA views), both (B, K).

    The evaluator reports with and without TTA side by side; the original view (the eval crop) is
    the first TTA view in both modes, so both come from one pass over the views.
    """
    views = views_of(images, eval_cfg, mode, crop_size)
    logits = model(views[0]).float()
    total = torch.softmax(logits, dim=1)
    for view in views[1:]:
        total = total + torch.softmax(model(view).float(), dim=1)
    return logits, total / len(views)


def tta_probabilities(model: torch.nn.Module, images: torch.Tensor, eval_cfg: EvalConfig, mode: str | None = None,
                      crop_size: int | None = None) -> torch.Tensor:
    """Mean softmax over the TTA views of `images` -> (B, K) probabilities."""
    return logits_and_tta_probabilities(model, images, eval_cfg, mode, crop_size)[1]
