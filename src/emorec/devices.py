"""`resolve_device`: the one place a device name (`auto`, `cpu`, `cuda`, `cuda:N`) becomes a
`torch.device`, shared by training, evaluation, prediction and feature extraction."""

from __future__ import annotations

import torch

from emorec.errors import EmorecError


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks a GPU when CUDA is available, else the CPU; a bare `cuda` means this rank's GPU
    (`local_rank`, 0 outside torchrun). A GPU asked for where there is none is a user error here,
    not a CUDA traceback later."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise EmorecError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise EmorecError(f"device '{name}' requested but CUDA is not available; use cpu or auto")
    if device.index is None:
        device = torch.device("cuda", local_rank)
    if device.index >= torch.cuda.device_count():
        raise EmorecError(f"device '{name}' requested but this machine has {torch.cuda.device_count()} GPU(s); "
                          f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device
