"""Batched inference, shared by training's validation pass, evaluation, prediction and feature
extraction: move a batch to the device, run a forward function without autograd (under autocast
when asked), skip batches that hold no readable image.

Each caller keeps only what differs: what the forward computes (logits, TTA probabilities,
pooled feature maps) and what it does with the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm import tqdm


def to_device(images: torch.Tensor, device: torch.device | str, channels_last: bool = False) -> torch.Tensor:
    """`images` on `device`; 4-D batches in channels_last memory order when asked."""
    images = images.to(device, non_blocking=True)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def infer(forward: Callable[[torch.Tensor], Any], images: torch.Tensor, device: torch.device | str, *,
          channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> Any:
    """`forward(images)` with the images on `device`, without autograd, under autocast when
    `amp_dtype` is set. `channels_last` applies to 4-D batches only."""
    device = torch.device(device)
    images = to_device(images, device, channels_last)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return forward(images)


def run_batches(forward: Callable[[torch.Tensor], Any], loader: Iterable, device: torch.device | str, *,
                channels_last: bool = False, amp_dtype: torch.dtype | None = None, show_progress: bool = False,
                desc: str = "infer") -> Iterator[tuple[Any, list]]:
    """For each batch `(images, *rest)` of `loader` with at least one image (the collates in
    `emorec.data.dataset` give empty batches when every image was unreadable): yield
    `(infer(forward, images, ...), rest)`."""
    for images, *rest in tqdm(loader, desc=desc, leave=False, disable=not show_progress, dynamic_ncols=True):
        if len(images) == 0:
            continue
        yield infer(forward, images, device, channels_last=channels_last, amp_dtype=amp_dtype), rest


def predict_logits(model: nn.Module, loader: Iterable, device: torch.device | str, amp_dtype: torch.dtype | None = None,
                   channels_last: bool = False, show_progress: bool = False,
                   desc: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 CPU logits and targets for every readable image of a loader of
    `(images, targets, ...)` batches, in order; the model is put back in its training mode."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    try:
        for out, (y, *_) in run_batches(lambda x: model(x).float().cpu(), loader, device, channels_last=channels_last,
                                        amp_dtype=amp_dtype, show_progress=show_progress, desc=desc):
            logits.append(out)
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(targets).long()
