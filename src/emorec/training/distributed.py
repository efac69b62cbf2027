"""DistributedDataParallel plumbing kept apart from the loop (as in torchvision's references).

`torchrun` describes the job through RANK / WORLD_SIZE / LOCAL_RANK environment variables and the
`env://` rendezvous; this is the one module that reads them, because that is torchrun's contract.
A plain `python -m emorec train` sees none of them and runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from emorec.devices import resolve_device
from emorec.shards import barrier, broadcast_object, gather, is_distributed  # noqa: F401 (the trainer's collectives too)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    is_main: bool = True
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) or run as one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, is_main=rank == 0, device=dev)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum across ranks in place (a no-op on one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate each rank's (possibly differently sized) CPU tensor in rank order."""
    if not is_distributed():
        return tensor
    return torch.cat(gather(tensor.cpu()))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under a DistributedDataParallel (or torch.compile) wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def has_unused_parameters(model: torch.nn.Module, image_size: int, device: torch.device) -> bool:
    """True when a forward + backward leaves some trainable parameter without a gradient.

    timm backbones built with `num_classes=0` can keep layers that `forward_features` never calls
    (ConvNeXt's head norm); DDP then waits forever for their gradients unless it is told to look
    for unused parameters, which costs a graph traversal per step, so it is asked only when needed.
    Eval mode: the probe must not move BatchNorm statistics.
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(2, 3, image_size, image_size, device=device)
        model(x).float().sum().backward()
        return any(p.requires_grad and p.grad is None for p in model.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def wrap_ddp(model: torch.nn.Module, device: torch.device, image_size: int) -> torch.nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    unused = has_unused_parameters(model, image_size, device)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


class ShardSampler(Sampler[int]):
    """Contiguous, unpadded shards for evaluation.

    DistributedSampler pads with repeated samples so every rank gets the same count, which makes
    sharded metrics differ from a single-process evaluation. Contiguous shards in rank order
    concatenate back to the original order, so gathered logits equal the single-process ones.
    """

    def __init__(self, num_samples: int, num_replicas: int, rank: int):
        per = -(-num_samples // num_replicas) if num_replicas else num_samples
        self.start = min(rank * per, num_samples)
        self.stop = min(self.start + per, num_samples)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
