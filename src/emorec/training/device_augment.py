"""`augment.backend=tensor` in training: micro-batches augmented on the device, seeded per
micro-batch, one micro-batch ahead.

`SeededBatchTransform` turns a batched augmentation (`data.batch_augment.BatchAugment(images,
seed)`) into a function of the micro-batch's place in the run: its seed comes from (seed, epoch,
rank, index of the micro-batch in the epoch), the epoch and rank read off the run's
`ResumableSampler`. A resumed run restarts at the same index, so it augments exactly as the
uninterrupted run did. (Unlike the per-sample seeds of the PIL path, the draws depend on how the
epoch is cut into ranks and micro-batches; both are fixed for a run.)

`AugmentedAhead` wraps the train loader: it moves each micro-batch to the device and augments it
there when the micro-batch before it is handed to the engine. On a GPU the CPU then spends its
share of the augmentation (kornia's Python, parameter draws) while the GPU still runs the previous
step's backward pass, and the augmentation's kernels queue behind it, instead of the GPU idling
while the CPU prepares them (the engine synchronises on every micro-batch).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from emorec.training.data_order import ResumableSampler

Batch = tuple[torch.Tensor, torch.Tensor, int]


class SeededBatchTransform:
    """`transform(images, seed)` as `(images, micro-batch index) -> augmented images`."""

    def __init__(self, transform: Callable[[torch.Tensor, int], torch.Tensor], seed: int, sampler: ResumableSampler):
        self.transform, self.seed, self.sampler = transform, seed, sampler

    def __call__(self, images: torch.Tensor, batch_index: int) -> torch.Tensor:
        s = self.sampler
        batch_seed = int(np.random.SeedSequence([self.seed, s.epoch, s.rank, batch_index]).generate_state(1)[0])
        return self.transform(images, batch_seed)


def augment_ahead(batches: Iterable[Batch], transform: Callable[[torch.Tensor, int], torch.Tensor],
                  device: torch.device, start: int = 0) -> Iterator[Batch]:
    """`(images on device, augmented, targets, n_skipped)` for each batch, numbered from `start`;
    a batch is augmented when the one before it is handed out. Empty batches (every image
    unreadable) pass through for the engine to count."""
    ready = None
    for index, (images, targets, skipped) in enumerate(batches, start):
        if len(images):
            images = transform(images.to(device, non_blocking=True), index)
        if ready is not None:
            yield ready
        ready = (images, targets, skipped)
    if ready is not None:
        yield ready


class AugmentedAhead:
    """The train loader of a `tensor` run: `loader`'s micro-batches through `augment_ahead`,
    numbered from where the sampler's epoch starts (mid-epoch after a resume)."""

    def __init__(self, loader, transform: SeededBatchTransform, sampler: ResumableSampler, batch_size: int,
                 device: torch.device):
        self.loader, self.transform, self.sampler = loader, transform, sampler
        self.batch_size, self.device = batch_size, device

    def __iter__(self) -> Iterator[Batch]:
        return augment_ahead(self.loader, self.transform, self.device, self.sampler.start // self.batch_size)

    def __len__(self) -> int:
        return len(self.loader)
