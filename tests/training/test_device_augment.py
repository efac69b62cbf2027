"""`augment_ahead`: each micro-batch is augmented on the device while the one before it trains."""

from __future__ import annotations

import torch

from emorec.training.device_augment import augment_ahead

CPU = torch.device("cpu")


def test_a_batch_is_augmented_when_the_one_before_it_is_handed_out():
    log = []

    def augment(images, index):
        log.append(f"augment {index}")
        return images + index

    batches = [(torch.zeros(2, 1), torch.tensor([0, 1]), 0) for _ in range(3)]
    for images, _, _ in augment_ahead(batches, augment, CPU, start=5):
        log.append(f"train {int(images[0, 0])}")
    assert log == ["augment 5", "augment 6", "train 5", "augment 7", "train 6", "train 7"]


def test_empty_batches_pass_through_and_keep_their_place():
    seen = []
    batches = [(torch.zeros(2, 1), torch.zeros(2), 0), (torch.empty(0, 1), torch.empty(0), 2),
               (torch.zeros(2, 1), torch.zeros(2), 0)]
    out = list(augment_ahead(batches, lambda x, i: seen.append(i) or x + 1, CPU))
    assert seen == [0, 2], "the empty micro-batch is not augmented but counts as index 1"
    assert [len(x) for x, _, _ in out] == [2, 0, 2] and out[1][2] == 2
