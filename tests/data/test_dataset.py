"""ManifestDataset + collate_skip: bad images are skipped and counted, never crash a loader."""

from __future__ import annotations

import torch
from edge_images import cmyk_jpeg, truncated_jpeg, zero_byte
from torch.utils.data import DataLoader

from emorec.config import Config
from emorec.data.dataset import ManifestDataset, collate_skip
from emorec.data.labels import LabelMap
from emorec.data.manifest import Sample, read_manifest
from emorec.data.transforms import build_eval_transform


def _transform():
    cfg = Config()
    cfg.data.image_size = 32
    return build_eval_transform(cfg, [0.5] * 3, [0.5] * 3)


def test_items_are_tensor_and_label_index(tiny_dataset):
    m = read_manifest(tiny_dataset)
    labels = LabelMap.from_manifest(m)
    ds = ManifestDataset(m.samples, labels, _transform(), 36)
    image, target = ds[len(ds) - 1]
    assert image.shape == (3, 32, 32) and target == labels.index("fear")


def test_bad_images_are_skipped_and_counted_through_a_dataloader(tmp_path, tiny_dataset):
    good = read_manifest(tiny_dataset).samples[:6]
    bad = [Sample(str(truncated_jpeg(tmp_path / "t.jpg")), "anger"), Sample(str(zero_byte(tmp_path / "z.jpg")), "awe")]
    odd = [Sample(str(cmyk_jpeg(tmp_path / "c.jpg")), "fear")]  # odd but readable: kept
    samples = good[:3] + bad + odd + good[3:]
    ds = ManifestDataset(samples, LabelMap(["amusement", "anger", "awe", "fear"]), _transform(), 36)
    assert ds[3] is None and ds[4] is None
    loader = DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate_skip)
    batches = list(loader)
    assert sum(n for _, _, n in batches) == 2
    assert sum(len(x) for x, _, _ in batches) == 7
    assert all(x.shape[1:] == (3, 32, 32) and len(x) == len(y) for x, y, _ in batches)


def test_a_batch_of_only_bad_images_gives_empty_tensors():
    images, targets, skipped = collate_skip([None, None])
    assert skipped == 2 and len(images) == 0 and len(targets) == 0 and targets.dtype == torch.long


def test_indexed_items_keep_their_position_through_the_collate(tmp_path, tiny_dataset):
    from emorec.data.dataset import collate_indexed

    good = read_manifest(tiny_dataset).samples[:3]
    samples = good[:1] + [Sample(str(zero_byte(tmp_path / "z.jpg")), "awe")] + good[1:]
    ds = ManifestDataset(samples, LabelMap(["amusement", "anger", "awe", "fear"]), _transform(), 36, return_index=True)
    images, targets, indices, skipped = collate_indexed([ds[i] for i in range(len(ds))])
    assert indices.tolist() == [0, 2, 3] and skipped == 1 and images.shape == (3, 3, 32, 32) and len(targets) == 3
    images, targets, indices, skipped = collate_indexed([None])
    assert len(images) == len(targets) == len(indices) == 0 and skipped == 1
