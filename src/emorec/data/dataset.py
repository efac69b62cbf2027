"""A torch Dataset over manifest samples that survives bad images.

A file that cannot be decoded makes `__getitem__` return None (with a warning naming it);
`collate_skip` drops the Nones and returns how many it dropped, so the engine can count skipped
images per epoch instead of crashing hours into a run. Works with DataLoader workers: nothing is
shared between processes, the count travels with each batch.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from emorec.data.imageio import ImageLoadError, load_rgb
from emorec.data.labels import LabelMap
from emorec.data.manifest import Sample

log = logging.getLogger("emorec.data")


class ManifestDataset(Dataset):
    """`(image tensor, label index)` per sample, or None for an unreadable image; with
    `return_index`, `(image tensor, label index, sample index)` so results map back to files.

    `min_size` is passed to `load_rgb`: JPEGs are draft-decoded to at least that many pixels per
    side. Pass the largest size the transform resizes to (for the eval transform
    `eval_resize_size(image_size)`), so nothing is upsampled after a draft decode.
    """

    def __init__(self, samples: Sequence[Sample], label_map: LabelMap, transform, min_size: int | None = None,
                 return_index: bool = False):
        # Plain numpy arrays, not lists of Python objects: forked DataLoader workers touch the
        # refcount of every object they read, which copies the parent's pages into each worker
        # (pytorch/pytorch#13246) and makes worker memory grow with the dataset.
        self.paths = np.array([s.path for s in samples])
        self.targets = np.array(label_map.encode([s.label for s in samples]), dtype=np.int64)
        self.transform = transform
        self.min_size = min_size
        self.return_index = return_index

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_rgb(str(self.paths[index]), self.min_size)
        except ImageLoadError as e:
            log.warning("skipping unreadable image %s: %s", e.path, e.reason)
            return None
        if self.transform is not None:
            image = self.transform(image)
        target = int(self.targets[index])
        return (image, target, index) if self.return_index else (image, target)


def _stack_readable(batch: list, columns: int) -> tuple:
    """(images, `columns` integer columns..., number of None samples dropped)."""
    kept = [b for b in batch if b is not None]
    images = torch.stack([b[0] for b in kept]) if kept else torch.empty(0, 3, 1, 1)
    ints = [torch.tensor([int(b[c]) for b in kept], dtype=torch.long) for c in range(1, 1 + columns)]
    return (images, *ints, len(batch) - len(kept))


def collate_skip(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the readable `(image, label)` samples; returns (images, targets, number of None
    samples dropped). A batch with no readable image gives empty tensors, so the loop can count
    and move on."""
    return _stack_readable(batch, 1)


def collate_indexed(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """`collate_skip` for `(image, label, index)` samples: (images, targets, indices, dropped)."""
    return _stack_readable(batch, 2)
