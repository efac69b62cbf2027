"""Batch MixUp / CutMix through timm's `Mixup`.

MixUp (Zhang et al., ICLR 2018) blends two images and their labels with lam ~ Beta(a, a);
CutMix (Yun et al., ICCV 2019) pastes a box of one image into another, lam being the pasted
area. Per batch, with probability `mix_prob` the batch is mixed, CutMix being chosen with
`switch_prob`; the targets come back as (B, K) probability vectors that the losses take as
soft targets.

timm pairs each sample with its mirror in the batch (`x.flip(0)`) and asserts an even batch
size. An odd batch (unreadable images were skipped, or a small last batch) goes through
`mix_batch`: the even part is mixed, the last sample keeps its own one-hot target, so no image is
ever dropped. Cached feature vectors (head-only training) have no pixels to cut: they get MixUp
only (`spatial=False`).

Label smoothing: timm's `Mixup` can fold it into the targets (`label_smoothing`), and emorec's
losses also smooth every target they receive. Smooth once: pass the smoothing to one of the two,
i.e. `label_smoothing=0.0` here when the loss is built with `loss.label_smoothing`.
"""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

from emorec.errors import EmorecError


def build_mixup(augment_cfg, num_classes: int, label_smoothing: float = 0.0, spatial: bool = True) -> Mixup | None:
    """A timm `Mixup` from `Config.augment` (mixup_alpha, cutmix_alpha, mix_prob, switch_prob),
    or None when mixing is off (both alphas 0, or mix_prob 0). `spatial=False` (feature vectors)
    turns CutMix off."""
    mixup_alpha, cutmix_alpha = augment_cfg.mixup_alpha, augment_cfg.cutmix_alpha if spatial else 0.0
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise EmorecError(f"augment.mixup_alpha={mixup_alpha}, augment.cutmix_alpha={cutmix_alpha}: alphas must be "
                          ">= 0 (0 turns that kind of mixing off)")
    for key in ("mix_prob", "switch_prob"):
        value = getattr(augment_cfg, key)
        if not 0.0 <= value <= 1.0:
            raise EmorecError(f"augment.{key}={value}: must be a probability in [0, 1]")
    if (mixup_alpha == 0 and cutmix_alpha == 0) or augment_cfg.mix_prob == 0:
        return None
    return Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=augment_cfg.mix_prob,
        switch_prob=augment_cfg.switch_prob,
        mode="batch",
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


def mix_batch(mixup: Mixup, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`mixup(inputs, targets)` for any batch size: (inputs, (B, K) soft targets), all B kept.

    timm needs an even batch; of an odd one the first B - 1 samples are mixed and the last keeps
    its one-hot target (smoothed as timm would), so nothing is dropped."""
    n = len(inputs)
    if n % 2 == 0:
        return mixup(inputs, targets)
    last_x, last_y = inputs[-1:].clone(), targets[-1:]
    last_target = mixup_target(last_y, mixup.num_classes, lam=1.0, smoothing=mixup.label_smoothing)
    if n == 1:
        return last_x, last_target
    mixed_x, mixed_y = mixup(inputs[:-1].clone(), targets[:-1])
    return torch.cat([mixed_x, last_x]), torch.cat([mixed_y, last_target])
