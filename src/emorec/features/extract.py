"""Run a frozen backbone once over every split and store its features in a `FeatureCache`.

Views per sample: every split gets `center` (the evaluation transform) and `hflip` (its mirror,
the standard test-time view); training samples also get `aug1..augK`, draws of the training
transform, so the head sees augmented inputs without running the backbone again each epoch.
The mirror is flipped on the tensor, not re-decoded: a free view.

What is stored per view is the model's own `forward_vectors`: the last feature map averaged by
default, or every stage pooled and concatenated (`feature_levels="all"`, `pooling="meanstd"` or
`"gem"`; models/pooling.py), so the head trained on the cache reads exactly what the model computes
from pixels. `derive_cache` cuts the vectors of a cheaper setting out of an `all` / `meanstd`
cache without running the backbone again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from emorec.config import Config
from emorec.data.inputs import Failure, load_or_failure
from emorec.errors import EmorecError
from emorec.features.cache import (
    CacheWriter,
    FeatureCache,
    INDEX_NAME,
    cache_key,
    file_sha256,
    manifest_fingerprint,
)
from emorec.file_lock import cache_writer_lock
from emorec.features.parts import ArraySink, PartSink, merge_part, record_dtype
from emorec.shards import Shard, barrier, gather, throughput_lines

SPLIT_ORDER = ("train", "val", "test")
# A time-limited extraction stops early once its pace says it would end this far past the limit,
# judged after a few batches (the first ones also pay for warm-up).
DEADLINE_SLACK = 1.1
DEADLINE_MIN_BATCHES = 3


class ExtractionDeadline(EmorecError):
    """An extraction stopped because it would not finish within its `time_limit_s`; `needed_s`
    is how long all of it would take at the pace measured."""

    def __init__(self, message: str, needed_s: float):
        super().__init__(message)
        self.needed_s = needed_s


def _waiting_deadline(time_limit_s: float | None, called: float):
    """`give_up` for the cache lock: a time-limited extraction stops waiting for another process's
    once its own limit has passed, as its own extraction would."""
    if time_limit_s is None:
        return None

    def give_up(waited_s: float) -> None:
        spent = time.perf_counter() - called
        if spent > time_limit_s:
            raise ExtractionDeadline(f"waited {waited_s:.0f} s for another process extracting the same features, "
                                     f"past the {time_limit_s:.0f} s allowed", spent)

    return give_up


def split_views(split: str, augmented_views: int) -> list[str]:
    views = ["center", "hflip"]
    if split == "train":
        views += [f"aug{i + 1}" for i in range(augmented_views)]
    return views


def view_seed(seed: int, split: str, row: int) -> int:
    """The seed of one image's augmented views: a function of the image's place in the cache only,
    so the draws do not depend on the loader's workers or on how torchrun ranks share the rows."""
    digest = hashlib.sha256(f"{seed}/{split}/{row}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _ViewDataset:
    """Decodes each image once and returns its views: (V_decoded, 3, H, W), label, row.

    `min_size` is the draft-decode floor for JPEGs: the eval transform's resize size, so the
    Resize that follows never upsamples a too-small draft. `seeds`: each image's `view_seed`
    (needed with augmented views).
    """

    def __init__(self, paths, labels, eval_transform, train_transform, augmented_views: int, min_size: int,
                 seeds=None):
        self.paths, self.labels = paths, labels
        self.eval_transform, self.train_transform = eval_transform, train_transform
        self.augmented_views = augmented_views
        self.min_size = min_size
        self.seeds = seeds

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        image = load_or_failure(self.paths[i], min_size=self.min_size)
        if isinstance(image, Failure):
            return None  # counted as skipped by the caller
        views = [self.eval_transform(image)]
        if self.augmented_views:
            # The torchvision transforms draw from torch's global generator: seeded for this image
            # alone, and put back afterwards (a loader without workers shares the caller's).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seeds[i])
                views += [self.train_transform(image) for _ in range(self.augmented_views)]
        return torch.stack(views), self.labels[i], i


def _weights_id(weights: str | None, pretrained: bool) -> str:
    from emorec.models.backbone_group import SEPARATOR

    if weights and SEPARATOR in weights:  # one file per member of a backbone group
        return SEPARATOR.join(_weights_id(part or None, pretrained) for part in weights.split(SEPARATOR))
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise EmorecError(f"weights file not found: {weights}; pass an existing .pth or .safetensors file")
        return "sha256:" + file_sha256(path)
    return "timm-pretrained" if pretrained else "random-init"


def _stable_repr(obj) -> str:
    """repr without memory addresses (a custom step's default repr holds one)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def _manifest_rows(manifest) -> list[tuple[str, str, str]]:
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    rows = [(s.path, s.label, s.split or "train") for s in manifest.samples]
    # Stable sort: train, val, test first, manifest order inside each split.
    return sorted(rows, key=lambda r: order.get(r[2], len(order)))


def extract_features(
    source,
    backbone: str,
    weights: str | None = None,
    pretrained: bool = True,
    image_size: int = 224,
    augmented_views: int = 0,
    grid: int = 2,
    cache_dir: str | Path = "features",
    cfg: Config | None = None,
    batch_size: int = 64,
    num_workers: int = 1,
    dtype: str = "float16",
    progress: bool = True,
    log=print,
    device: str = "cpu",
    feature_levels: str = "last",
    pooling: str = "avg",
    time_limit_s: float | None = None,
    shard: Shard | None = None,
) -> FeatureCache:
    """Extract (or find in the cache) features of every split of `source`.

    `source` is a folder / CSV path (read with `read_manifest`, splits made with `ensure_splits`
    from `cfg.data`) or an already split `Manifest`. Returns the finished cache; a matching cache
    is returned at once with a "cache hit" line. `feature_levels` / `pooling`: what each vector
    holds (`model.feature_levels`, `model.pooling`). `time_limit_s` (from the call on, model
    build included): raise `ExtractionDeadline`, leaving no valid cache, once the extraction is
    past it or, at the pace so far, would end past it.

    `shard`: this process's rank among torchrun's (`emorec features extract` under torchrun; None:
    one process, no parts). Each rank extracts every world_size-th image of each split into its
    part under `<cache>/parts/` (resumed when a killed run is started again), rank 0 assembles the
    cache one process would have written, and every rank returns it. Only rank 0 logs and shows
    progress.
    """
    import torch

    sharded, shard = shard is not None, shard or Shard()
    if not shard.is_main:
        log, progress = (lambda _: None), False

    called = time.perf_counter()

    from emorec.data.labels import LabelMap
    from emorec.data.manifest import read_manifest
    from emorec.data.split import ensure_splits
    from emorec.devices import resolve_device

    cfg = copy.deepcopy(cfg) if cfg is not None else Config()
    if dtype not in ("float16", "float32"):
        raise EmorecError(f"feature dtype '{dtype}' is not supported; use float16 or float32")
    from emorec.models.pooling import LEVELS, POOLINGS

    if feature_levels not in LEVELS or pooling not in POOLINGS:
        raise EmorecError(f"features extract: feature levels {feature_levels!r} / pooling {pooling!r} are not known; "
                          f"choose from {', '.join(LEVELS)} / {', '.join(POOLINGS)}")
    if grid < 0 or augmented_views < 0 or image_size < 16:
        raise EmorecError("features extract: --grid and --views must be >= 0 and --image-size >= 16")
    run_on = resolve_device(device)
    if isinstance(source, (str, Path)):
        manifest = read_manifest(str(source), cfg.data.images_root)
        manifest = ensure_splits(manifest, cfg.data)
    else:
        manifest = source
    rows = _manifest_rows(manifest)
    label_map = LabelMap.from_manifest(manifest)
    weights_id = _weights_id(weights, pretrained)  # checks the file before any model is built

    from emorec.data.dataset import collate_indexed
    from emorec.data.transforms import build_eval_transform, build_train_transform, eval_resize_size
    from emorec.inference import infer, run_batches
    from emorec.models.backbone import backbone_data_config, level_channels
    from emorec.models.backbone_group import absolute_weights
    from emorec.models.classifier import build_model
    from emorec.models.pooling import pool_levels

    cfg.model.backbone = backbone
    cfg.model.weights = weights
    cfg.model.pretrained = pretrained
    cfg.model.feature_levels = feature_levels
    cfg.model.pooling = pooling
    cfg.data.image_size = image_size
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, len(label_map)).eval()
    data_cfg = backbone_data_config(model.backbone)
    mean, std = data_cfg["mean"], data_cfg["std"]
    eval_transform = build_eval_transform(cfg, mean, std)
    train_transform = build_train_transform(cfg, mean, std)

    spec: dict[str, Any] = {
        "backbone": backbone,
        "weights": weights_id,
        "image_size": image_size,
        "augmented_views": augmented_views,
        "grid": grid,
        "dtype": dtype,
        "manifest": manifest_fingerprint(rows),
        "labels": label_map.names,
        # The transforms' repr names every step and parameter: a changed preprocessing (another
        # interpolation, crop ratio or normalisation) must not reuse features made the old way.
        "eval_transform": _stable_repr(eval_transform),
        # JPEGs are draft-decoded to this size; features made from another decode size differ.
        "decode_min_size": eval_resize_size(image_size),
    }
    # Only when not the default: caches written before these settings existed keep their keys.
    if feature_levels != "last":
        spec["feature_levels"] = feature_levels
    if pooling != "avg":
        spec["pooling"] = pooling
    if augmented_views:
        # The augmented views also depend on the augmentation pipeline, its settings and the seed.
        spec["train_transform"] = _stable_repr(train_transform)
        # Views are always augmented per image (PIL); augment.backend only says where training runs it.
        spec["augment"] = {k: v for k, v in dataclasses.asdict(cfg.augment).items() if k != "backend"}
        spec["seed"] = cfg.train.seed
        # Draws seeded per image from (seed, split, row) (version 3): every levels / pooling draws the
        # same views, and so do any number of loader workers or torchrun ranks. Version 2 drew them
        # in one sequence, whose values depended on the loader's workers.
        spec["augment_draws"] = 3
    key = cache_key(spec)
    root = Path(cache_dir) / key
    if (root / INDEX_NAME).is_file():
        log(f"cache hit: {root}")
        return FeatureCache(root)
    # Another process may be extracting this very cache (fit workers sharing a search): wait for
    # it and read what it wrote. torchrun's ranks share one cache by design (parts/, rank 0 writes).
    lock = nullcontext() if sharded else cache_writer_lock(root, log, _waiting_deadline(time_limit_s, called))
    with lock:
        if (root / INDEX_NAME).is_file():
            log(f"cache hit: {root} (written by the process waited for)")
            return FeatureCache(root)
        log(f"cache miss: extracting {len(rows)} images with {backbone} at {image_size}px into {root}")
        # channels_last lets oneDNN pick its fast convolution kernels: 1.8x on 2 CPU cores (96 px).
        model = model.to(run_on, memory_format=torch.channels_last)

        probe = torch.zeros(1, 3, image_size, image_size)
        channels = infer(model.forward_vectors, probe, run_on).shape[1]
        map_channels = infer(model.forward_features, probe, run_on).shape[1]
        levels = level_channels(model.backbone) if feature_levels == "all" else [map_channels]

        if sharded:
            from emorec.part_files import PartsFolder

            parts = PartsFolder(root / "parts", {"key": key, "world_size": shard.world_size}, shard)
            parts.claim()
        else:
            writer = CacheWriter(root, key, spec, label_map.names)
        split_names = [s for s in dict.fromkeys(r[2] for r in rows)]
        started = time.perf_counter()
        forwards = 0
        skipped = 0

        def forward(images):
            """(B, 1 + n_aug, 3, H, W) decoded views -> ((B * V, D) vectors, (B * V, C, h, w) last
            feature maps), sample-major."""
            center = images[:, 0]
            views = [center, torch.flip(center, dims=[3])] + [images[:, 1 + i] for i in range(images.shape[1] - 1)]
            x = torch.stack(views, dim=1).flatten(0, 1).contiguous(memory_format=torch.channels_last)
            maps = model.forward_levels(x)
            return pool_levels(maps, pooling), maps[-1].float()

        total_forwards = sum(len(split_views(r[2], augmented_views)) for r in rows) // shard.world_size
        batches = 0
        images = 0  # extracted by this process (readable or not): its throughput

        def check_deadline() -> None:
            now = time.perf_counter()
            needed = now - called + (total_forwards - forwards) * (now - started) / max(forwards, 1)
            late = now - called > time_limit_s
            if late or (batches >= DEADLINE_MIN_BATCHES and needed > DEADLINE_SLACK * time_limit_s):
                raise ExtractionDeadline(
                    f"extraction stopped after {now - called:.0f} s, {forwards} of {total_forwards} forward passes done: "
                    f"all of it needs ~{needed:.0f} s here, more than the {time_limit_s:.0f} s allowed", needed)

        for split in split_names:
            split_rows = [r for r in rows if r[2] == split]
            paths = [r[0] for r in split_rows]
            labels = label_map.encode([r[1] for r in split_rows])
            views = split_views(split, augmented_views)
            if sharded:
                layout = record_dtype(len(views), channels, grid, map_channels, dtype)
                sink = PartSink(parts.path(name=split, suffix=".bin"), layout, shard.positions(len(paths)), batch_size)
            else:
                sink = ArraySink(writer.add_split(split, paths, labels, views, channels, grid, dtype,
                                                  grid_channels=map_channels), len(paths))
            todo = sink.todo
            n_aug = augmented_views if split == "train" else 0
            seeds = [view_seed(cfg.train.seed, split, row) for row in todo] if n_aug else None
            dataset = _ViewDataset([paths[row] for row in todo], [labels[row] for row in todo], eval_transform,
                                   train_transform, n_aug, eval_resize_size(image_size), seeds)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_indexed
            )
            for (vectors, fmap), (_, idx, _) in run_batches(forward, loader, run_on, show_progress=progress,
                                                            desc=f"extract {split}"):
                b = len(idx)
                pooled = vectors.reshape(b, len(views), channels).cpu().numpy().astype(dtype)
                g = None
                if grid > 0:
                    g = torch.nn.functional.adaptive_avg_pool2d(fmap, grid).reshape(b, len(views), map_channels, grid,
                                                                                    grid).cpu().numpy().astype(dtype)
                sink.write(idx.numpy(), pooled, g)
                forwards += fmap.shape[0]
                batches += 1
                if time_limit_s is not None:
                    check_deadline()
            sink.close()
            images += len(todo)
            if not sharded:
                skipped += _count_skipped(writer, split, log)

        ranks = gather((images, time.perf_counter() - started, forwards))  # every rank's parts are complete
        if sharded:
            if not shard.is_main:
                barrier()  # until rank 0 has written the index
                return FeatureCache(root)
            writer = CacheWriter(root, key, spec, label_map.names)
            for split in split_names:
                split_rows = [r for r in rows if r[2] == split]
                views = split_views(split, augmented_views)
                arrays = writer.add_split(split, [r[0] for r in split_rows], label_map.encode([r[1] for r in split_rows]),
                                          views, channels, grid, dtype, grid_channels=map_channels)
                layout = record_dtype(len(views), channels, grid, map_channels, dtype)
                for rank in range(shard.world_size):
                    count = len(Shard(rank, shard.world_size).positions(len(split_rows)))
                    merge_part(arrays, parts.path(rank, split, ".bin"), layout, count)
                skipped += _count_skipped(writer, split, log)
        done, seconds, forwards = (sum(r[0] for r in ranks), max(r[1] for r in ranks), sum(r[2] for r in ranks))
        stats = {
            "seconds": round(seconds, 2),
            "images": len(rows),
            "forwards": forwards,
            "images_per_s": round((done - skipped) / max(seconds, 1e-9), 2),
            "skipped": skipped,
            "channels": int(channels),
            "level_channels": [int(c) for c in levels],
            "data_mean": list(map(float, mean)),
            "data_std": list(map(float, std)),
            "weights_path": absolute_weights(weights),
            "pretrained": pretrained,
            "device": str(run_on),
        }
        if sharded:
            stats["world_size"] = shard.world_size
        cache = writer.finish(rows, stats)
        log(
            f"extracted {len(rows) - skipped} images ({forwards} forward passes, {skipped} skipped) "
            f"in {seconds:.1f} s ({stats['images_per_s']:.1f} img/s)"
        )
        if sharded:
            for line in throughput_lines([(n, s) for n, s, _ in ranks]):
                log(line)
            parts.remove()
            barrier()  # the other ranks return the cache once its index is written
        return cache


def _count_skipped(writer: CacheWriter, split: str, log) -> int:
    skipped = int((~writer.arrays[split]["valid"]).sum())
    if skipped:
        log(f"  {split}: skipped {skipped} unreadable images")
    return skipped


def cached_arrays(cache: FeatureCache, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(pooled (N, V, C) float32, labels (N,)) of the readable samples of one split."""
    s = cache.split(split)
    keep = np.flatnonzero(s.valid)
    return np.asarray(s.pooled[keep], dtype=np.float32), s.labels[keep]
