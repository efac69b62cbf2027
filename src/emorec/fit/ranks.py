"""`torchrun --nproc-per-node N -m emorec fit ...`: the extraction on every rank, the search on rank 0.

The search's first and, on large data, longest step is extracting each backbone's features over
train + val. Under torchrun every rank extracts its strided share of those images into the one
cache (`extract_features(shard=...)`, the same cache key and values as one process), then ranks
other than 0 leave and rank 0 runs the search as one process, finding every cache already written
(a cache hit). The candidates themselves (probes, heads, fine-tunes) stay on rank 0: they are many
short jobs that successive halving stops early, which several `emorec fit` processes sharing
`--storage` spread better than one data-parallel job.

The budget covers the extraction: it is started before it, and rank 0 refuses up front, on every
rank alike, when its estimate divided over the ranks does not fit. Unlike the one-process search,
a sharded extraction is not stopped mid-way at the deadline: the ranks would have to agree on the
moment to stop, so the estimate decides before any image is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from emorec.errors import EmorecError
from emorec.fit.backbones import BackboneChoice
from emorec.fit.budget import Budget, Estimates, budget_for, budget_text, decode_seconds, duration_text

# torchrun's variables: cleared on rank 0 once the extraction is over, so its candidate runs
# (trainer runs in this process) train as one process instead of waiting for a process group.
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def extraction_plan(counts: dict[str, int], choices: list[BackboneChoice], image_size: int, views: int, device,
                    decode_s: float, world_size: int, budget: Budget) -> str | None:
    """None when the extraction of every backbone, shared by `world_size` ranks, fits `budget`;
    else the one-line reason with a --budget that would do."""
    estimates = Estimates(counts, image_size, views, device, decode_s)
    needed = sum(estimates.extraction(c.name) for c in choices) / world_size
    if budget.allows(needed):
        return None
    return (f"no candidate can finish within --budget {budget_text(budget.seconds)}: the extraction alone needs "
            f"~{duration_text(needed)} on {world_size} ranks here; use --budget {budget_for(needed * 1.5)} or more")


def extract_on_ranks(source, output: str | Path, choices: list[BackboneChoice], cfg, *, image_size: int, views: int,
                     cache_dir: str | Path | None, device: str, workers: int, budget: Budget,
                     log: Callable[[str], None] = print) -> bool:
    """Every rank's share of the search's features; True on rank 0, which goes on to search
    (with torchrun's variables cleared), False on the others, which are done."""
    from emorec.features.cache import DEFAULT_CACHE_ROOT
    from emorec.fit.feature_sets import extract_variants
    from emorec.fit.state import SPLITS_FILE, SearchState, search_splits, train_and_val
    from emorec.shards import Shard, barrier, broadcast_object
    from emorec.training.distributed import cleanup, init_distributed

    for choice in choices:
        choice.check()  # a wrong name or file fails on every rank before anything is read
    output = Path(output)
    ranks = init_distributed(device)
    shard = Shard(ranks.rank, ranks.world_size)
    try:
        if shard.is_main:
            output.mkdir(parents=True, exist_ok=True)
            manifest = search_splits(source, output, cfg.data, SearchState.load(output, source))
        barrier()  # the splits are written once, by rank 0, and read by every rank
        if not shard.is_main:
            from emorec.data.manifest import read_manifest

            manifest = read_manifest(str(output / SPLITS_FILE))
        data = train_and_val(manifest)
        refusal = None
        if shard.is_main:
            counts = {s: len(manifest.subset(s).samples) for s in manifest.splits()}
            counts.setdefault("val", 0)
            train_paths = [s.path for s in manifest.samples if s.split == "train"]
            refusal = extraction_plan(counts, choices, image_size, views, ranks.device,
                                      decode_seconds(train_paths, image_size), shard.world_size, budget)
        refusal = broadcast_object(refusal)
        if refusal:
            raise EmorecError(refusal)
        import time

        started = time.monotonic()
        for choice in choices:
            extract_variants(data, choice.name, choice.weights, choice.pretrained, image_size=image_size,
                             views=views, cache_dir=Path(cache_dir or DEFAULT_CACHE_ROOT), cfg=cfg, workers=workers,
                             progress=shard.is_main, device=str(ranks.device), log=log if shard.is_main else _quiet,
                             shard=shard)
        log(f"features of {len(choices)} backbone(s) extracted on {shard.world_size} ranks in "
            f"{time.monotonic() - started:.0f} s; the search goes on in rank 0 alone") if shard.is_main else None
    finally:
        cleanup()
    if shard.is_main:
        for name in TORCHRUN_VARIABLES:
            os.environ.pop(name, None)
    return shard.is_main


def _quiet(_: str) -> None:
    pass
