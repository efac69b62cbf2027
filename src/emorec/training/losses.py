"""Classification losses for hard (B,) and soft (B, K) targets.

Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) down-weights the
examples the model already gets right, so training time goes to hard and rare ones. Multi-class
form used here, for a target distribution t (one-hot or mixed, *before* smoothing), class
weights w and probabilities p:

    l_i = alpha * sum_k  t_ik * w_k * (1 - p_ik)^gamma * CE(smooth(e_k), p_i)

    loss = sum_i l_i / sum_i sum_k t_ik * w_k

where e_k is the one-hot target of class k and smooth(e) = (1 - eps) * e + eps / K.

- The loss is linear in t: a MixUp target lam * e_a + (1 - lam) * e_b costs
  lam * l(a) + (1 - lam) * l(b), the usual MixUp loss.
- Each target class k carries its class weight w_k (`weight`, e.g. sklearn's "balanced") and its
  focal factor (1 - p_k)^gamma, and label smoothing acts *inside* that term. This is on purpose
  different from `F.cross_entropy(weight=..., label_smoothing=...)`, which weights the smoothing
  mass by the weight of the column it lands on: with FER-2013's balanced weights (disgust ~9.4,
  happy ~0.57) that pulls every image towards the rarest class, and the per-image optimum of a
  "happy" image under focal loss put 28% of its probability on "disgust" (measured;
  tests/training/test_losses.py keeps the optimum on the true class). A model trained that way
  predicted "disgust" for 90% of the test images (benchmarks/RESULTS.md).
- Likewise the focal factor is the one of the target class only; applying it to the smoothing
  mass of the other classes (where p_k is small, so the factor is ~1) would outweigh a confident
  true class and cap its probability.
- The normaliser is the total class weight of the batch, which is what `F.cross_entropy` does for
  hard targets with `weight`, so a one-hot soft target gives exactly the loss of its hard label,
  mixed or unmixed batches have the same scale, and without weights it is the plain batch mean.
- With gamma = 0, alpha = 1 the loss equals `F.cross_entropy` for hard targets (weights or label
  smoothing, not both) and for unweighted soft targets with or without smoothing. Smoothing is
  meant to happen here only: MixUp targets handed to this loss should be unsmoothed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Focal loss with class weights and label smoothing; see the module docstring for the maths.
    `forward(logits (B, K), targets (B,) int or (B, K) probabilities) -> scalar`."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, weight: torch.Tensor | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        if gamma < 0 or alpha <= 0 or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"FocalLoss: need gamma >= 0, alpha > 0, 0 <= label_smoothing < 1 "
                             f"(got {gamma}, {alpha}, {label_smoothing})")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.label_smoothing = float(label_smoothing)
        # A buffer, so `.to(device)` moves it with the module.
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32),
                             persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[-1]
        log_p = F.log_softmax(logits.float(), dim=-1)
        if targets.ndim == 1:
            targets = F.one_hot(targets.long(), num_classes).to(log_p.dtype)
        else:
            targets = targets.to(log_p.dtype)
        if self.weight is not None:
            targets = targets * self.weight.to(log_p.dtype)  # t_ik * w_k
        # (B, K): cross-entropy of the smoothed one-hot target of each class k.
        eps = self.label_smoothing
        per_class = -(1.0 - eps) * log_p
        if eps > 0:
            per_class = per_class - (eps / num_classes) * log_p.sum(dim=-1, keepdim=True)
        if self.gamma > 0:
            per_class = per_class * (1.0 - log_p.exp()).pow(self.gamma)
        normaliser = targets.sum().clamp_min(torch.finfo(log_p.dtype).tiny)
        return self.alpha * (targets * per_class).sum() / normaliser

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, label_smoothing={self.label_smoothing}"


class CombinedLoss(nn.Module):
    """focal + ce_weight * cross-entropy: the focal term concentrates on hard examples, the
    cross-entropy term keeps a gradient on the easy ones (which focal nearly silences)."""

    def __init__(self, focal: FocalLoss, ce: FocalLoss, ce_weight: float):
        super().__init__()
        self.focal = focal
        self.ce = ce
        self.ce_weight = float(ce_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, targets) + self.ce_weight * self.ce(logits, targets)


def cross_entropy_loss(weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> FocalLoss:
    """Cross-entropy as the gamma = 0, alpha = 1 focal loss, so hard and soft targets, weights
    and smoothing are handled by one definition."""
    return FocalLoss(gamma=0.0, alpha=1.0, weight=weight, label_smoothing=label_smoothing)


def build_loss(loss_cfg, class_weights: torch.Tensor | None = None) -> nn.Module:
    """The loss named by `Config.loss.name` ('focal', 'ce' or 'combined'), with `class_weights`
    (a (K,) tensor, e.g. sklearn "balanced"; None for unweighted)."""
    from emorec.errors import EmorecError

    if loss_cfg.gamma < 0:
        raise EmorecError(f"loss.gamma={loss_cfg.gamma}: must be >= 0 (0 gives cross-entropy)")
    if loss_cfg.alpha <= 0:
        raise EmorecError(f"loss.alpha={loss_cfg.alpha}: must be > 0")
    if not 0.0 <= loss_cfg.label_smoothing < 1.0:
        raise EmorecError(f"loss.label_smoothing={loss_cfg.label_smoothing}: must be in [0, 1)")
    smoothing = loss_cfg.label_smoothing
    if loss_cfg.name == "ce":
        return cross_entropy_loss(class_weights, smoothing)
    focal = FocalLoss(loss_cfg.gamma, loss_cfg.alpha, class_weights, smoothing)
    if loss_cfg.name == "focal":
        return focal
    if loss_cfg.name == "combined":
        return CombinedLoss(focal, cross_entropy_loss(class_weights, smoothing), loss_cfg.ce_weight)
    raise EmorecError(f"loss.name '{loss_cfg.name}': choose one of focal, ce, combined")
