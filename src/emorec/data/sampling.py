"""Class weights and class-balanced sampling, single-process or distributed.

`class_weights(mode="balanced")` is scikit-learn's `compute_class_weight("balanced")`:
n_samples / (n_classes * count). `DistributedWeightedSampler` draws every epoch's indices with a
generator seeded by (seed + epoch), the same on every rank, then gives rank r the strided share
`indices[r::world_size]` (DistributedSampler's layout), so the shares are disjoint and N ranks
together see exactly what one process would.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler


def class_weights(label_indices: Sequence[int], num_classes: int, mode: str = "balanced") -> torch.Tensor:
    """Per-class weights (num_classes,); a class absent from `label_indices` gets weight 0."""
    if mode == "none":
        return torch.ones(num_classes, dtype=torch.float32)
    if mode != "balanced":
        raise ValueError(f"unknown class weight mode {mode!r}")
    counts = np.bincount(np.asarray(label_indices, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def sample_weights(label_indices: Sequence[int], num_classes: int) -> torch.Tensor:
    """One weight per sample, its class's balanced weight: every class is drawn equally often."""
    per_class = class_weights(label_indices, num_classes).double()
    return per_class[torch.as_tensor(np.asarray(label_indices, dtype=np.int64))]


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class DistributedWeightedSampler(Sampler[int]):
    """Weighted draws (with replacement) of `num_samples` indices per epoch, split across ranks.

    Each rank yields `ceil(num_samples / num_replicas)` indices. `set_epoch(epoch, start)` selects
    the epoch and skips its first `start` indices, so a run can resume mid-epoch;
    `state_dict()` / `load_state_dict()` carry (epoch, start).
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor, num_samples: int, num_replicas: int | None = None,
                 rank: int | None = None, seed: int = 0, replacement: bool = True):
        world, own_rank = _world()
        self.num_replicas = world if num_replicas is None else int(num_replicas)
        self.rank = own_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, {self.num_replicas})")
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        if self.weights.ndim != 1 or not len(self.weights) or float(self.weights.sum()) <= 0:
            raise ValueError("weights must be a non-empty 1-D sequence with a positive sum")
        self.num_samples_total = int(num_samples)
        self.per_rank = math.ceil(self.num_samples_total / self.num_replicas)
        self.seed, self.replacement = int(seed), replacement
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state["epoch"], state.get("start", 0))

    def epoch_indices(self) -> torch.Tensor:
        """All ranks' indices of this epoch, before sharding (the same on every rank)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.per_rank * self.num_replicas
        return torch.multinomial(self.weights, total, self.replacement, generator=g)

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_indices()[self.rank :: self.num_replicas]
        return iter(mine[self.start :].tolist())

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


def build_sampler(label_indices: Sequence[int], num_classes: int, cfg, distributed: bool) -> Sampler | None:
    """Class-balanced sampler when `data.weighted_sampling`; else DistributedSampler under DDP,
    else None (the DataLoader shuffles). `cfg` is a Config (or its DataConfig)."""
    data = getattr(cfg, "data", cfg)
    seed = cfg.train.seed if hasattr(cfg, "train") else data.split_seed
    world, rank = _world() if distributed else (1, 0)
    n = len(label_indices)
    if data.weighted_sampling:
        return DistributedWeightedSampler(sample_weights(label_indices, num_classes), n, world, rank, seed)
    if distributed:
        return DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    return None
