"""Batch MixUp / CutMix through timm's `Mixup`.

MixUp (Zhang et al., ICLR 2018) blends two images and their labels with lam ~ Beta(a, a);
CutMix (Yun et al., ICCV 2019) pastes a box of one image into another, lam being the pasted
area. Per batch, with probability `mix_prob` the batch is mixed, CutMix being chosen with
`switch_prob`; the targets come back as (B, K) probability vectors that the losses take as
soft targets.

timm pairs each sample with its mirror in the batch (`x.flip(0)`) and asserts an even batch
size: the trainer drops the last incomplete batch, and the engine drops one sample of an odd
batch (which only appears when unreadable images were skipped).

Label smoothing: timm's `Mixup` can fold it into the targets (`label_smoothing`), and emorec's
losses also smooth every target they receive. Smooth once: pass the smoothing to one of the two,
i.e. `label_smoothing=0.0` here when the loss is built with `loss.label_smoothing`.
"""

from __future__ import annotations

from timm.data import Mixup

from emorec.errors import EmorecError


def build_mixup(augment_cfg, num_classes: int, label_smoothing: float = 0.0) -> Mixup | None:
    """A timm `Mixup` from `Config.augment` (mixup_alpha, cutmix_alpha, mix_prob, switch_prob),
    or None when mixing is off (both alphas 0, or mix_prob 0)."""
    mixup_alpha, cutmix_alpha = augment_cfg.mixup_alpha, augment_cfg.cutmix_alpha
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
