"""CLI: `emorec features extract`, the frozen-backbone pass behind `emorec train --head-only`."""

from __future__ import annotations

import argparse

from emorec.features.cache import DEFAULT_CACHE_ROOT


def register(sub) -> None:
    features = sub.add_parser("features", help="frozen-feature fast path: extract and cache backbone features")
    fsub = features.add_subparsers(dest="features_command", metavar="SUBCOMMAND")
    features.set_defaults(func=lambda args: (features.print_help(), 2)[1])

    p = fsub.add_parser(
        "extract",
        help="run a frozen backbone once over every split and cache pooled features",
        description=(
            "Runs the frozen backbone once over every split of SOURCE (plus K augmented views per "
            "training image and a mirrored view for all) and stores the features in a "
            "memory-mapped cache keyed by backbone, weights hash, image size, views, grid and the "
            "dataset's content; a second identical call is a cache hit. `emorec train --head-only` "
            "with the same data, backbone, weights and image size finds it (or extracts it itself). Under "
            "torchrun (`torchrun --nproc-per-node N -m emorec features extract ...`) each rank extracts every N-th "
            "image into the cache's parts/ folder and rank 0 assembles the same cache one process would write; "
            "the same command started again after a kill resumes."
        ),
    )
    p.add_argument("source", help="dataset folder or CSV manifest (splits made as `emorec train` makes them)")
    p.add_argument("--backbone", required=True, help="timm model name, e.g. tf_efficientnet_lite0")
    p.add_argument("--weights", default=None, help="local .pth/.safetensors weights (default: timm's pretrained download)")
    p.add_argument("--random-init", action="store_true", help="no pretrained weights (tests and smoke runs)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--views", type=int, default=0, help="augmented views per training image (default 0)")
    p.add_argument("--feature-levels", choices=["last", "all"], default="last",
                   help="last: the last feature map; all: every stage of the backbone, concatenated")
    p.add_argument("--pooling", choices=["avg", "meanstd", "gem"], default="avg",
                   help="per channel: mean, mean and std, or generalised mean (p=3)")
    p.add_argument("--grid", type=int, default=2, help="also store the last feature map pooled to GxG (0: off)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_ROOT, help=f"cache root (default {DEFAULT_CACHE_ROOT}, where "
                   "`emorec train --head-only` looks)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="image decoding processes")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--config", default=None, help="YAML config: data split and augmentation settings")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_extract)


def _extract(args: argparse.Namespace) -> int:
    import os

    from emorec.config import load_config
    from emorec.features.extract import extract_features
    from emorec.shards import Shard, torchrun_world_size

    cfg = load_config(args.config, args.overrides)
    device, shard = args.device, None
    if torchrun_world_size(os.environ) is not None:
        from emorec.training.distributed import init_distributed

        ranks = init_distributed(args.device)  # cuda:LOCAL_RANK where CUDA is, NCCL there and gloo on the CPU
        device, shard = str(ranks.device), Shard(ranks.rank, ranks.world_size)
    try:
        cache = extract_features(
            args.source,
            backbone=args.backbone,
            weights=args.weights,
            pretrained=not args.random_init,
            image_size=args.image_size,
            augmented_views=args.views,
            grid=args.grid,
            cache_dir=args.cache_dir,
            cfg=cfg,
            batch_size=args.batch_size,
            num_workers=args.workers,
            dtype=args.dtype,
            device=device,
            feature_levels=args.feature_levels,
            pooling=args.pooling,
            shard=shard,
        )
    finally:
        if shard is not None:
            from emorec.training.distributed import cleanup

            cleanup()
    if shard is not None and not shard.is_main:
        return 0
    for split in cache.splits:
        info = cache.index["splits"][split]
        print(f"  {split:<6} {info['count']:>7} images  {len(info['views'])} views  {info['skipped']} skipped")
    print(f"cache: {cache.root}")
    return 0
