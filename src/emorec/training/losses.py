"""Classification losses for hard (B,) and soft (B, K) targets.

Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) down-weights the
examples the model already gets right, so training time goes to hard and rare ones. Multi-class
form used here, for a target distribution t (one-hot, smoothed and/or mixed) and probabilities p:

    l_i = -sum_k  t_ik * alpha * w_k * (1 - p_ik)^gamma * log p_ik

    loss = sum_i l_i / sum_i sum_k t_ik * w_k        (t before label smoothing)

- `alpha` is a scalar factor (the paper's alpha balances positives against negatives in the
  binary case; per-class balancing is what `weight` is for, e.g. sklearn's "balanced" weights).
- The normaliser is the total class weight of the batch, which is what `F.cross_entropy` does for
  hard targets with `weight`; using the target distribution for it extends that to soft targets,
  so a one-hot soft target gives exactly the loss of its hard label, mixed or unmixed batches
  have the same scale, and without weights it is the plain batch mean.
- Label smoothing is applied to every target, hard or soft, as `F.cross_entropy` does:
  t <- (1 - eps) * t + eps / K. With gamma = 0, alpha = 1 the loss equals `F.cross_entropy`
  (weights, label smoothing and soft targets included; for soft targets with class weights
  PyTorch divides by the batch size instead, the one place the two differ). Smoothing is meant to
  happen here only: MixUp targets handed to this loss should be unsmoothed.
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
        weight = self.weight if self.weight is not None else torch.ones(num_classes, device=logits.device)
        weight = weight.to(log_p.dtype)
        normaliser = (targets * weight).sum()
        if self.label_smoothing > 0:
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        per_class = -log_p * weight
        if self.gamma > 0:
            per_class = per_class * (1.0 - log_p.exp()).pow(self.gamma)
        return self.alpha * (targets * per_class).sum() / normaliser.clamp_min(torch.finfo(log_p.dtype).tiny)

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
