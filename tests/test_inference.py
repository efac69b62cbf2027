"""The batched inference helper shared by validation, evaluation, prediction and extraction."""

from __future__ import annotations

import torch

from emorec.data.dataset import collate_indexed
from emorec.inference import infer, run_batches

CPU = torch.device("cpu")


def test_batches_without_a_readable_image_are_skipped_and_the_rest_passed_along():
    x = torch.randn(5, 3, 4, 4)
    batches = [
        collate_indexed([(x[0], 1, 0), None, (x[1], 0, 2)]),
        collate_indexed([None, None]),
        collate_indexed([(x[2], 3, 4)]),
    ]
    seen = list(run_batches(lambda images: images.sum(dim=(1, 2, 3)), batches, CPU))
    assert len(seen) == 2
    (first, (targets, indices, skipped)), (second, _) = seen
    torch.testing.assert_close(first, x[:2].sum(dim=(1, 2, 3)))
    assert targets.tolist() == [1, 0] and indices.tolist() == [0, 2] and skipped == 1
    torch.testing.assert_close(second, x[2:3].sum(dim=(1, 2, 3)))


def test_infer_runs_without_autograd_and_channels_last_only_on_image_batches():
    layer = torch.nn.Conv2d(3, 2, 1)
    out = infer(layer, torch.randn(2, 3, 4, 4), "cpu", channels_last=True)
    assert not out.requires_grad
    views = infer(lambda v: v, torch.randn(2, 5, 3, 4, 4), CPU, channels_last=True)  # (B, V, C, H, W) stays as is
    assert views.shape == (2, 5, 3, 4, 4) and views.is_contiguous()
