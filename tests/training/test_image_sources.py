"""`sources.image_data` for both augmentation backends: `tensor` hands the engine uint8 squares and
a seeded batch augmentation; validation is the same as with `pil`."""

from __future__ import annotations

import torch

from emorec.data.labels import LabelMap
from emorec.data.manifest import read_manifest
from emorec.data.split import ensure_splits
from emorec.training.distributed import DistInfo
from emorec.training.sources import image_data
from training_runs import data, one_thread, tiny_config  # noqa: F401 (data and one_thread are fixtures)

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def sources(data, tmp_path, backend: str):
    cfg = tiny_config(data, tmp_path, backend, f"augment.backend={backend}")
    manifest = ensure_splits(read_manifest(cfg.data.source), cfg.data)
    return image_data(cfg, DistInfo(), manifest.subset("train").samples, manifest.subset("val").samples,
                      LabelMap.from_manifest(manifest), MEAN, STD, torch.device("cpu"))


def test_the_tensor_backend_loads_uint8_squares_and_augments_them_in_batches(data, tmp_path, one_thread):
    td = sources(data, tmp_path, "tensor")
    td.sampler.set_epoch(0)
    images, targets, skipped = next(iter(td.train_loader))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 36, 36) and skipped == 0
    out = td.batch_transform(images, 0)
    assert out.dtype == torch.float32 and out.shape == (8, 3, 32, 32)
    assert torch.equal(td.batch_transform(images, 0), out), "the same epoch and micro-batch draw the same"
    assert not torch.equal(td.batch_transform(images, 1), out), "the next micro-batch draws anew"
    td.sampler.set_epoch(1)
    assert not torch.equal(td.batch_transform(images, 0), out), "and so does the next epoch"


def test_both_backends_validate_on_the_same_pixels(data, tmp_path, one_thread):
    pil, tensor = sources(data, tmp_path, "pil"), sources(data, tmp_path, "tensor")
    assert pil.batch_transform is None
    for (a, ya, _), (b, yb, _) in zip(pil.val_loader, tensor.val_loader, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
