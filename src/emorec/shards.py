"""One inference job split across torchrun ranks: which inputs each rank takes, the two
collectives the job needs, and how fast each rank went.

`emorec predict` and `emorec features extract` under `torchrun` run one process per GPU (or per
CPU slot), on one machine or several. `training.distributed.init_distributed` joins the process
group (NCCL on CUDA, gloo on CPU); this module sits below every layer so that prediction
(serving/), extraction (features/) and training share what comes after. Rank r takes inputs r, r + W,
r + 2W, ... of the job's input list (W ranks): strided rather than contiguous, so a folder
walked class by class, or a list sorted by size, spreads evenly over the ranks, and rank 0 merges
the parts in input order by reading them in turn, one record from each, holding nothing in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: rank `rank` of `world_size`."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def positions(self, count: int) -> range:
        """The indices this rank takes among `count` inputs, in input order."""
        return range(self.rank, count, self.world_size)


def torchrun_world_size(environ: Mapping[str, str]) -> int | None:
    """The number of ranks torchrun started (its WORLD_SIZE), None without torchrun. A command
    started by torchrun, even with one rank, runs as a sharded job (parts, resume, throughput per
    rank); without torchrun it runs as it always has. The caller passes the environment, so it
    can choose before importing torch, which the torch-free ONNX prediction path never does."""
    return int(environ["WORLD_SIZE"]) if environ.get("WORLD_SIZE") else None


# The process-group collectives every distributed job here needs (the trainer's too: training.
# distributed imports them), each a no-op without a group of several ranks. torch.distributed is
# imported inside them, so the torch-free ONNX prediction path can import this module.

def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank; `[value]` on one process. A collective:
    it returns once every rank has called it, so it also serves as the barrier before a merge."""
    if not is_distributed():
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank `src`'s `value` on every rank (a decision one rank made alone, such as whether old parts
    may be resumed: on a network file system the other nodes may not see rank 0's files yet)."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def throughput_lines(speeds: list[tuple[int, float]]) -> list[str]:
    """An aligned table of (images, seconds) per rank, in rank order, and the total: all images
    over the slowest rank's seconds, since the job ends when its last rank does."""
    rows = [(str(rank), images, seconds) for rank, (images, seconds) in enumerate(speeds)]
    rows.append(("total", sum(i for i, _ in speeds), max((s for _, s in speeds), default=0.0)))
    lines = [f"{'rank':<6} {'images':>9} {'seconds':>9} {'images/s':>9}"]
    for name, images, seconds in rows:
        lines.append(f"{name:<6} {images:>9} {seconds:>9.1f} {images / max(seconds, 1e-9):>9.1f}")
    return lines
