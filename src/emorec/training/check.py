"""`emorec check`: does the configured model train on real images, before a long run starts?

Builds the model, loads a few training images through the same transforms, dataset and collate
as training, runs forward, loss and backward once, and reports shapes, parameter counts, the
device and what the dataset holds.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from emorec.config import Config
from emorec.errors import EmorecError


def check_pipeline(cfg: Config, num_images: int = 4) -> dict[str, Any]:
    from emorec.data.dataset import ManifestDataset, collate_skip
    from emorec.data.labels import LabelMap
    from emorec.data.manifest import read_manifest
    from emorec.data.sampling import loss_class_weights
    from emorec.data.split import ensure_splits
    from emorec.data.transforms import build_train_transform, eval_resize_size
    from emorec.devices import resolve_device
    from emorec.models import backbone_data_config, build_model, parameter_summary
    from emorec.training.losses import build_loss

    if not cfg.data.source:
        raise EmorecError("no dataset to check: pass --data FOLDER_OR_CSV (or --set data.source=...)")
    device = resolve_device(cfg.train.device)
    manifest = ensure_splits(read_manifest(cfg.data.source, cfg.data.images_root), cfg.data)
    label_map = LabelMap.from_manifest(manifest)
    train = manifest.subset("train")
    k = len(label_map)

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, k).to(device)
    data_cfg = backbone_data_config(model.backbone)
    mean, std = list(data_cfg["mean"]), list(data_cfg["std"])
    batch_augment = None
    if cfg.augment.backend == "tensor":  # workers decode and resize; the batch is augmented on the device
        from emorec.data.batch_augment import BatchAugment, build_decode_transform

        batch_augment = BatchAugment(cfg, mean, std)
        dataset = ManifestDataset(train.samples, label_map, build_decode_transform(cfg),
                                  eval_resize_size(cfg.data.image_size))
    else:
        dataset = ManifestDataset(train.samples, label_map, build_train_transform(cfg, mean, std), cfg.data.image_size)
    # Spread the few images over the classes, so the loss sees more than one label.
    step = max(1, len(dataset) // max(num_images, 2))
    picked = [dataset[i] for i in range(0, len(dataset), step)][: max(num_images, 2)]
    images, targets, skipped = collate_skip(picked)
    if len(images) < 2:
        raise EmorecError(f"{cfg.data.source}: fewer than 2 of the checked images could be read ({skipped} "
                          "unreadable); run `emorec data check` on it")
    images, targets = images.to(device), targets.to(device)
    if batch_augment is not None:
        images = batch_augment(images, cfg.train.seed)
    labels = label_map.encode([s.label for s in train.samples])
    weights = loss_class_weights(labels, k, cfg)
    loss_fn = build_loss(cfg.loss, weights).to(device)

    model.train()
    fmap = model.forward_features(images)
    logits = model.forward_head(fmap)
    loss = loss_fn(logits.float(), targets)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = float(torch.norm(torch.stack([g.detach().float().norm() for g in grads]))) if grads else 0.0
    if not math.isfinite(float(loss.detach())) or not math.isfinite(grad_norm):
        raise EmorecError(f"model {cfg.model.backbone}: non-finite loss or gradient on real images; check "
                          "model.weights and the data")
    return {
        "device": str(device),
        "backbone": cfg.model.backbone,
        "input_shape": list(images.shape),
        "feature_map_shape": list(fmap.shape),
        "logits_shape": list(logits.shape),
        "loss": float(loss.detach()),
        "grad_norm": grad_norm,
        "params": parameter_summary(model),
        "mean": list(data_cfg["mean"]), "std": list(data_cfg["std"]),
        "dataset": {
            "source": manifest.source,
            "images": len(manifest.samples),
            "splits": {s: len(manifest.subset(s).samples) for s in sorted(manifest.splits())},
            "classes": manifest.class_counts(),
            "skipped_in_check": int(skipped),
        },
    }
