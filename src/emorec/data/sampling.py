"""Class weights and class-balanced sampling, single-process or distributed.

`class_weights(mode="balanced")` is scikit-learn's `compute_class_weight("balanced")`:
n_samples / (n_classes * count).

The weighted sampler and the loss's class weights share one balancing budget
(`loss_class_weights`): the sampler draws class c in proportion to count_c ** (1 - power), and
the loss weights are "balanced" against *that* drawn distribution, so their product gives every
class the same expected share of the loss whatever the power. Applying both in full (sampler
balanced, then weights balanced against the raw counts) squares the correction: on FER-2013 the
rarest class (disgust, 1.5%) then carried ~60% of the loss, and full fine-tuning predicted it for
90% of the images (benchmarks/RESULTS.md).

`DistributedWeightedSampler` draws every epoch's indices with a generator seeded by (seed + epoch), the same on every rank, then gives rank r the strided share
`indices[r::world_size]` (DistributedSampler's layout), so the shares are disjoint and N ranks
together see exactly what one process would.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler


def _counts(label_indices: Sequence[int], num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(label_indices, dtype=np.int64), minlength=num_classes).astype(np.float64)


def class_weights(label_indices: Sequence[int], num_classes: int, mode: str = "balanced",
                  drawn_power: float = 0.0) -> torch.Tensor:
    """Per-class weights (num_classes,); a class absent from `label_indices` gets weight 0.
    `drawn_power` > 0 balances against the class distribution a sampler of that power draws
    (count ** (1 - drawn_power)) instead of the raw counts; 1 gives all-ones weights."""
    if mode == "none":
        return torch.ones(num_classes, dtype=torch.float32)
    if mode != "balanced":
        raise ValueError(f"unknown class weight mode {mode!r}")
    counts = _counts(label_indices, num_classes)
    present = counts > 0
    drawn = counts[present] ** (1.0 - drawn_power)
    weights = np.zeros(num_classes)
    weights[present] = drawn.sum() / (present.sum() * drawn)
    return torch.tensor(weights, dtype=torch.float32)


def sample_weights(label_indices: Sequence[int], num_classes: int, power: float = 1.0) -> torch.Tensor:
    """One draw weight per sample, count(class) ** -power: 1 draws every class equally often,
    0 draws the data as it is."""
    counts = _counts(label_indices, num_classes)
    per_class = np.zeros(num_classes)
    per_class[counts > 0] = counts[counts > 0] ** -power
    return torch.as_tensor(per_class)[torch.as_tensor(np.asarray(label_indices, dtype=np.int64))]


def sampling_power(cfg) -> float:
    """The weighted sampler's power under `cfg` (a Config or its DataConfig); 0 without one."""
    data = getattr(cfg, "data", cfg)
    if not data.weighted_sampling:
        return 0.0
    if not 0.0 <= data.sampling_power <= 1.0:
        from emorec.errors import EmorecError

        raise EmorecError(f"data.sampling_power={data.sampling_power}: must be in [0, 1] "
                          "(1 draws every class equally often)")
    return float(data.sampling_power)


def draw_weights(label_indices: Sequence[int], num_classes: int, cfg) -> torch.Tensor | None:
    """The weighted sampler's per-sample draw weights under `cfg` (a Config or its DataConfig);
    None when `data.weighted_sampling` is off."""
    data = getattr(cfg, "data", cfg)
    return sample_weights(label_indices, num_classes, sampling_power(cfg)) if data.weighted_sampling else None


def loss_class_weights(label_indices: Sequence[int], num_classes: int, cfg) -> torch.Tensor | None:
    """The loss's class weights under `cfg` (None for `loss.class_weights: none`), balanced
    against what the weighted sampler draws, so sampler and loss together balance once."""
    if cfg.loss.class_weights == "none":
        return None
    return class_weights(label_indices, num_classes, cfg.loss.class_weights, drawn_power=sampling_power(cfg))


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


def build_sampler(label_indices: Sequence[int], num_classes: int, cfg, num_replicas: int = 1,
                  rank: int = 0) -> Sampler[int]:
    """The training sampler under `cfg` (a Config): class-balanced draws when
    `data.weighted_sampling`, else a seeded shuffle. Both are epoch-seeded (`set_epoch`) from
    `train.seed` and give rank `rank` its strided share of `num_replicas`, also for a single
    process: the order is then a pure function of (seed, epoch), so a run can restart mid-epoch
    and N ranks together see what one process would."""
    n = len(label_indices)
    draw = draw_weights(label_indices, num_classes, cfg)
    if draw is not None:
        return DistributedWeightedSampler(draw, n, num_replicas, rank, cfg.train.seed)
    return DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=cfg.train.seed)
