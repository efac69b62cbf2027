"""`sources.image_data` for both augmentation backends: with `tensor` the workers hand over uint8
squares that are augmented in batches, seeded per micro-batch (so a resumed epoch continues the
same draws); validation is the same as with `pil`."""

from __future__ import annotations

import torch

from emorec.data.labels import LabelMap
from emorec.data.manifest import read_manifest
from emorec.data.split import ensure_splits
from emorec.training.device_augment import AugmentedAhead
from emorec.training.distributed import DistInfo
from emorec.training.sources import image_data
from training_runs import data, one_thread, tiny_config  # noqa: F401 (data and one_thread are fixtures)

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def sources(data, tmp_path, backend: str):
    cfg = tiny_config(data, tmp_path, backend, f"augment.backend={backend}")
    manifest = ensure_splits(read_manifest(cfg.data.source), cfg.data)
    return image_data(cfg, DistInfo(), manifest.subset("train").samples, manifest.subset("val").samples,
                      LabelMap.from_manifest(manifest), MEAN, STD, torch.device("cpu"))


def test_the_tensor_backend_augments_uint8_squares_per_micro_batch(data, tmp_path, one_thread):
    td = sources(data, tmp_path, "tensor")
    assert isinstance(td.train_loader, AugmentedAhead)
    td.sampler.set_epoch(0)
    raw = [images for images, _, _ in td.train_loader.loader]
    assert raw[0].dtype == torch.uint8 and raw[0].shape == (8, 3, 36, 36)
    epoch = [images for images, _, _ in td.train_loader]
    assert len(epoch) == len(raw) and epoch[0].dtype == torch.float32 and epoch[0].shape == (8, 3, 32, 32)
    assert torch.equal(epoch[1], td.train_loader.transform(raw[1], 1)), "micro-batch 1 is seeded as micro-batch 1"
    assert not torch.equal(td.train_loader.transform(raw[1], 2), epoch[1])

    td.sampler.set_epoch(0, start=8)  # resumed after one micro-batch of 8
    assert torch.equal(next(iter(td.train_loader))[0], epoch[1]), "a resumed epoch draws what the whole one drew"
    td.sampler.set_epoch(1)
    assert not torch.equal(td.train_loader.transform(raw[1], 1), epoch[1]), "the next epoch draws anew"


def test_both_backends_validate_on_the_same_pixels(data, tmp_path, one_thread):
    pil, tensor = sources(data, tmp_path, "pil"), sources(data, tmp_path, "tensor")
    for (a, ya, _), (b, yb, _) in zip(pil.val_loader, tensor.val_loader, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
