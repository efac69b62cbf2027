"""CLI: `emorec data check | split | cache`, thin wrappers over emorec.data."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect, split and cache datasets",
                          description="Inspect, split and cache datasets. SOURCE is an ImageFolder tree "
                                      "(root/<label>/*.jpg or root/<split>/<label>/*.jpg), a folder of "
                                      "<label>_*.jpg files, or a CSV manifest (path,label[,split]).")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")

    check = commands.add_parser("check", help="class counts, broken/odd images, duplicates, split leakage")
    _source_args(check)
    check.add_argument("--report", metavar="DIR", help="where the lists go (default ./emorec-check/<dataset name>/)")
    check.add_argument("--min-side", type=int, default=32, help="flag images whose shorter side is below this (px)")
    check.set_defaults(func=run_check)

    split = commands.add_parser("split", help="write a clean stratified train/val/test manifest")
    _source_args(split)
    split.add_argument("--output", "-o", required=True, metavar="FILE.csv", help="manifest to write (path,label,split)")
    split.add_argument("--val", type=float, default=0.1, help="validation fraction of each class (default 0.1)")
    split.add_argument("--test", type=float, default=0.1, help="test fraction of each class (default 0.1)")
    split.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    split.set_defaults(func=run_split)

    cache = commands.add_parser("cache", help="write a pre-resized JPEG copy and its manifest")
    _source_args(cache)
    cache.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the copy and manifest.csv")
    cache.add_argument("--size", type=int, default=256, help="shorter side of the copies in px (default 256)")
    cache.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    cache.set_defaults(func=run_cache)


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="dataset folder or CSV manifest")
    parser.add_argument("--images-root", metavar="DIR", help="folder the CSV's relative paths start from "
                                                               "(default: the CSV's folder)")
    parser.add_argument("--workers", type=int, default=2, help="processes reading images (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_check(args) -> int:
    from emorec.data.check import check_dataset, default_report_dir
    from emorec.data.manifest import read_manifest

    start = time.perf_counter()
    manifest = read_manifest(args.source, args.images_root)
    report = check_dataset(manifest, workers=args.workers, min_side=args.min_side, progress=not args.no_progress)
    report.write(args.report or default_report_dir(args.source))
    print(report)
    print(f"checked      {len(manifest.samples):,} images in {time.perf_counter() - start:.1f} s")
    return 0


def run_split(args) -> int:
    from emorec.config import DataConfig
    from emorec.data.check import split_dataset
    from emorec.data.manifest import read_manifest

    manifest = read_manifest(args.source, args.images_root)
    cfg = DataConfig(val_fraction=args.val, test_fraction=args.test, split_seed=args.seed)
    _, stats = split_dataset(manifest, args.output, cfg, workers=args.workers, progress=not args.no_progress)
    splits = ", ".join(f"{k} {v:,}" for k, v in stats["splits"].items())
    print(f"wrote        {stats['written']} ({stats['images']:,} images: {splits})")
    print(f"dropped      {stats['dropped_unreadable']:,} unreadable images")
    print(f"duplicates   {stats['duplicate_groups']:,} groups kept in one split each "
          f"({stats['moved_to_keep_groups_together']:,} images moved from their given split)")
    return 0


def run_cache(args) -> int:
    from emorec.data.cache import cache_dataset
    from emorec.data.manifest import read_manifest

    manifest = read_manifest(args.source, args.images_root)
    stats = cache_dataset(manifest, args.output, size=args.size, quality=args.quality, workers=args.workers,
                          progress=not args.no_progress)
    json.dump(stats, sys.stdout, indent=2)
    print()
    return 0
