"""Where a run's batches come from: decoded images, or backbone features cached on disk.

Both sources hand the one engine the same things: a train loader that yields
`(inputs, targets, n_skipped)` in the order of an epoch-seeded `ResumableSampler` (so the order is
a function of (seed, epoch) and a run restarts mid-epoch), a val loader over this rank's shard,
and the sizes the schedule needs. Full fine-tuning and head-only training therefore share the
loop, the schedule, early stopping, checkpoints, signals and resume.

Cached features are (N, V, C) vectors, one per sample and view (the centre crop, its mirror, and
K augmented draws for training samples; `features/extract.py`). Training takes one view per
sample and epoch, drawn from (seed, epoch, position) like an image's augmentation; validation
takes the centre view, the counterpart of the evaluation transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from emorec.training.data_order import ResumableSampler, SeededSamples
from emorec.training.distributed import DistInfo, ShardSampler

# Image batches of 32 make 600 tiny steps per epoch over 20k vectors; the head reaches the same
# accuracy with larger batches (OneCycle rescales the schedule) at a fraction of the time.
MAX_HEAD_BATCH = 1024


@dataclass
class TrainingData:
    train_loader: Iterable
    val_loader: Iterable
    sampler: ResumableSampler
    batch_size: int  # micro-batch per process
    total_batches: int  # micro-batches per epoch, after train.limit_train_batches
    train_labels: list[int]
    num_val: int


def head_batch_size(num_samples: int, image_batch_size: int, accumulation_steps: int = 1) -> int:
    """Micro-batch for cached vectors: large for speed (an optimizer step sees at most
    MAX_HEAD_BATCH vectors), but at least ~16 optimizer steps per epoch on small datasets."""
    accum = max(1, accumulation_steps)
    return int(max(image_batch_size, min(MAX_HEAD_BATCH // accum, num_samples // (16 * accum))))


def _epoch_batches(num_samples: int, batch_size: int, limit: int) -> tuple[int, bool]:
    """(micro-batches per epoch, drop_last). The last partial batch is dropped when there are at
    least two full ones, or when it would hold a single sample (BatchNorm needs two)."""
    drop_last = num_samples >= 2 * batch_size or num_samples % batch_size == 1
    full = num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)
    return (min(full, limit) if limit > 0 else full), drop_last


def _training_sampler(train_labels: list[int], num_classes: int, cfg, info: DistInfo) -> ResumableSampler:
    from emorec.data.sampling import build_sampler

    return ResumableSampler(build_sampler(train_labels, num_classes, cfg, info.world_size, info.rank),
                            info.rank, info.world_size)


def image_data(cfg, info: DistInfo, train_samples, val_samples, label_map, mean, std,
               device: torch.device) -> TrainingData:
    """Decoded images through DataLoader workers (`data.num_workers`), augmented there
    (`augment.backend=pil`) or, decoded and resized only, in batches on `device`
    (`tensor`: `device_augment.AugmentedAhead`). Validation is the same for both."""
    from torch.utils.data import DataLoader

    from emorec.data.dataset import ManifestDataset, collate_skip
    from emorec.data.transforms import build_eval_transform, build_train_transform, eval_resize_size

    size = cfg.data.image_size
    if cfg.augment.backend == "tensor":
        from emorec.data.batch_augment import build_decode_transform

        train_ds = ManifestDataset(train_samples, label_map, build_decode_transform(cfg), eval_resize_size(size))
    else:
        train_ds = ManifestDataset(train_samples, label_map, build_train_transform(cfg, mean, std), size)
    val_ds = ManifestDataset(val_samples, label_map, build_eval_transform(cfg, mean, std), eval_resize_size(size))
    train_labels = train_ds.targets.tolist()
    sampler = _training_sampler(train_labels, len(label_map), cfg, info)
    batch_size = cfg.data.batch_size  # per process, as in torchvision's references
    total, drop_last = _epoch_batches(len(sampler.base), batch_size, cfg.train.limit_train_batches)
    workers = cfg.data.num_workers

    def loader(dataset, batch_sampler_source, batch: int, drop: bool):
        return DataLoader(
            dataset, batch_size=batch, sampler=batch_sampler_source, num_workers=workers, collate_fn=collate_skip,
            drop_last=drop, pin_memory=cfg.data.pin_memory and device.type == "cuda",
            persistent_workers=cfg.data.persistent_workers and workers > 0,
            # An explicit generator: creating an iterator must not consume the global RNG, or a
            # resumed run would draw different dropout / MixUp numbers than an uninterrupted one.
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )

    train_loader = loader(SeededSamples(train_ds, cfg.train.seed), sampler, batch_size, drop_last)
    if cfg.augment.backend == "tensor":
        from emorec.data.batch_augment import BatchAugment
        from emorec.training.device_augment import AugmentedAhead, SeededBatchTransform

        augment = SeededBatchTransform(BatchAugment(cfg, mean, std), cfg.train.seed, sampler)
        train_loader = AugmentedAhead(train_loader, augment, sampler, batch_size, device)
    return TrainingData(
        train_loader=train_loader,
        val_loader=loader(val_ds, ShardSampler(len(val_ds), info.world_size, info.rank), cfg.eval.batch_size, False),
        sampler=sampler, batch_size=batch_size, total_batches=total, train_labels=train_labels,
        num_val=len(val_ds),
    )


class FeatureBatches:
    """Batches `(vectors (B, C), targets (B,), 0)` of cached features.

    With a `ResumableSampler` (training) the order is its epoch's, from its `start`, and each
    sample's view is drawn from (seed, epoch, global position); with any other sampler
    (validation shards) the order is the sampler's and the view is `view`.
    """

    def __init__(self, vectors: torch.Tensor, targets: torch.Tensor, sampler, batch_size: int,
                 drop_last: bool = False, seed: int = 0, view: int = 0):
        self.vectors, self.targets = vectors, targets
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.seed, self.view = seed, view

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        s, bs = self.sampler, self.batch_size
        if isinstance(s, ResumableSampler):
            order = torch.as_tensor(list(s.base), dtype=torch.long)
            views = self._drawn_views(s, len(order))
            end = len(order) - len(order) % bs if self.drop_last else len(order)
            order, views = order[s.start:end], views[s.start:end]
        else:
            order = torch.as_tensor(list(s), dtype=torch.long)
            views = torch.full_like(order, self.view)
        device = self.vectors.device
        order, views = order.to(device), views.to(device)
        for a in range(0, len(order), bs):
            idx = order[a:a + bs]
            yield self.vectors[idx, views[a:a + bs]], self.targets[idx], 0

    def _drawn_views(self, s: ResumableSampler, count: int) -> torch.Tensor:
        num_views = self.vectors.shape[1]
        if num_views == 1:
            return torch.zeros(count, dtype=torch.long)
        epoch_seed = int(np.random.SeedSequence([self.seed, s.epoch]).generate_state(1)[0])
        g = torch.Generator().manual_seed(epoch_seed)
        drawn = torch.randint(0, num_views, (count * s.world_size,), generator=g)
        return drawn[torch.arange(count) * s.world_size + s.rank]  # global position of the j-th sample


def load_split(cache, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(vectors (N, V, C) float32, targets (N,), unreadable count) of one cache split."""
    s = cache.split(split)
    keep = np.flatnonzero(s.valid)
    vectors = torch.from_numpy(np.asarray(s.pooled[keep], dtype=np.float32)).to(device)
    return vectors, torch.from_numpy(s.labels[keep]).long().to(device), int(len(s.valid) - len(keep))


def feature_data(cfg, info: DistInfo, cache, num_classes: int, device: torch.device) -> TrainingData:
    """Cached backbone features of the train and val splits, held in memory on `device`."""
    train_x, train_y, _ = load_split(cache, "train", device)
    val_x, val_y, _ = load_split(cache, "val", device)
    train_labels = train_y.tolist()
    sampler = _training_sampler(train_labels, num_classes, cfg, info)
    batch_size = head_batch_size(len(train_labels), cfg.data.batch_size, cfg.optim.accumulation_steps)
    total, drop_last = _epoch_batches(len(sampler.base), batch_size, cfg.train.limit_train_batches)
    return TrainingData(
        train_loader=FeatureBatches(train_x, train_y, sampler, batch_size, drop_last, cfg.train.seed),
        val_loader=FeatureBatches(val_x, val_y, ShardSampler(len(val_y), info.world_size, info.rank),
                                  max(cfg.eval.batch_size, MAX_HEAD_BATCH)),
        sampler=sampler, batch_size=batch_size, total_batches=total, train_labels=train_labels,
        num_val=len(val_y),
    )
