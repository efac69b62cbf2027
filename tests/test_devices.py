"""One device resolver for every command: names become torch devices or one-line errors."""

from __future__ import annotations

import pytest
import torch

from emorec.devices import resolve_device
from emorec.errors import EmorecError


def _cuda(monkeypatch, available: bool, count: int = 0):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_is_the_cpu_without_cuda(monkeypatch):
    _cuda(monkeypatch, False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_and_bare_cuda_mean_this_ranks_gpu(monkeypatch):
    _cuda(monkeypatch, True, count=4)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("cuda:3", local_rank=2) == torch.device("cuda", 3)


@pytest.mark.parametrize("name, available, count, message", [
    ("cuda", False, 0, "CUDA is not available"),
    ("cuda:1", True, 1, "has 1 GPU"),
    ("tpu9", False, 0, "unknown device 'tpu9'"),
])
def test_impossible_devices_are_one_line_errors(monkeypatch, name, available, count, message):
    _cuda(monkeypatch, available, count)
    with pytest.raises(EmorecError, match=message):
        resolve_device(name)
