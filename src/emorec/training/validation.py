"""The validation pass of a training epoch: logits over the (sharded) val split, then metrics.

Under DDP each rank predicts a contiguous shard and the logits are gathered in rank order, so
the metrics equal a single process's. The loss is the training loss (class weights, smoothing)
on the plain validation view, so `val_loss` means the same for images and cached features.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

from emorec.inference import predict_logits
from emorec.training import distributed as dist_utils


def macro_f1(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over all `num_classes` labels: a class absent from this batch of predictions
    still counts (as 0), so the figure is comparable from epoch to epoch."""
    return float(f1_score(targets, preds, labels=list(range(num_classes)), average="macro", zero_division=0))


def validate(model: torch.nn.Module, loader, loss_fn, device: torch.device, num_classes: int,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> dict[str, Any]:
    """{'val_loss', 'val_accuracy', 'val_macro_f1'} of `model` on every rank's shard together."""
    logits, targets = predict_logits(model, loader, device, amp_dtype, channels_last)
    logits, targets = dist_utils.all_gather_concat(logits), dist_utils.all_gather_concat(targets)
    if not len(targets):
        return {"val_loss": math.nan, "val_accuracy": math.nan, "val_macro_f1": math.nan}
    with torch.no_grad():
        val_loss = float(loss_fn(logits.to(device), targets.to(device)))
    preds, y = logits.argmax(1).numpy(), targets.numpy()
    return {
        "val_loss": val_loss,
        "val_accuracy": float((preds == y).mean()),
        "val_macro_f1": macro_f1(y, preds, num_classes),
    }
