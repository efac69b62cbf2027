"""Run under `torchrun --nproc-per-node 2` by test_distributed.py (gloo on CPU).

    ddp_worker.py empty-batch OUT.json   engine: rank 1's micro-batches 1 and 2 are empty
    ddp_worker.py slow-rank-1 ARGS...    `emorec train ARGS` with rank 1 reading its data 2 s late
"""

from __future__ import annotations

import json
import os
import sys
import time


def empty_batch(out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from emorec.training.engine import EpochProgress, LoopState, StepOptions, train_one_epoch

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)))
    g = torch.Generator().manual_seed(rank)
    loader = []
    for i in range(6):
        x, y = torch.randn(4, 8, generator=g), torch.randint(0, 4, (4,), generator=g)
        if rank == 1 and i in (1, 2):  # every image of these micro-batches was unreadable
            x, y = x[:0], y[:0]
        loader.append((x, y, 4 - len(x)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    progress = EpochProgress()
    train_one_epoch(model, loader, nn.CrossEntropyLoss(), opt, None, torch.device("cpu"),
                    StepOptions(accumulation_steps=2), LoopState(), progress, len(loader), show_progress=False)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"max_diff": float((gathered[0] - gathered[1]).abs().max()),
                       "skipped_steps": progress.skipped_steps, "moved": bool((flat != 0).any())}, f)
    dist.destroy_process_group()


def slow_rank_1(args: list[str]) -> int:
    import emorec.data.manifest as manifest

    if os.environ.get("RANK") == "1":
        real = manifest.read_manifest

        def late(*a, **k):
            time.sleep(2.0)  # rank 0 has long created the run directory by now
            return real(*a, **k)

        manifest.read_manifest = late
    from emorec.cli import main

    return main(["train", *args])


if __name__ == "__main__":
    if sys.argv[1] == "empty-batch":
        empty_batch(sys.argv[2])
    else:
        raise SystemExit(slow_rank_1(sys.argv[2:]))
