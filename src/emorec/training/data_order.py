"""Reproducible, resumable data order: which sample comes when, and with which augmentation.

Exact resume (and DDP == single-process equivalence) needs two things a stock DataLoader does not
give: the epoch's order must be a pure function of (seed, epoch) that can restart at any batch,
and a sample's random augmentation must not depend on which worker process happened to load it.
`ResumableSampler` wraps an epoch-seeded sampler (DistributedSampler, DistributedWeightedSampler)
and can skip the batches already done; `SeededSamples` seeds the augmentation RNGs per sample
from (seed, epoch, global position), where the global position of a rank's j-th sample is
`j * world_size + rank`, the strided layout of DistributedSampler. So sample k of an epoch gets
the same crop whether it is loaded by 1 process or by rank k % N of N.
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler):
    """Yields `(epoch, global_position, index)` keys from an epoch-seeded base sampler."""

    def __init__(self, base: Sampler, rank: int = 0, world_size: int = 1):
        self.base = base
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order; skip its first `start` samples (already trained on)."""
        self.epoch, self.start = epoch, start
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for j, index in enumerate(self.base):
            if j >= self.start:
                yield self.epoch, j * self.world_size + self.rank, int(index)

    def __len__(self) -> int:
        return max(len(self.base) - self.start, 0)


class SeededSamples(Dataset):
    """Loads `dataset[index]` with python / numpy / torch RNGs seeded from the sample's key.

    The caller's RNG states are restored afterwards, so with `num_workers=0` loading does not
    disturb the main process's random stream (dropout, MixUp).
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]):
        epoch, position, index = key
        sample_seed = int(np.random.SeedSequence([self.seed, epoch, position]).generate_state(1)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
