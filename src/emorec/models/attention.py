"""Channel attention on the backbone's last feature map.

Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018): global average
pooling squeezes each channel to one number, a two-layer bottleneck (reduction r) with a sigmoid
turns those into per-channel gates, and the map is rescaled by them. timm's `SEModule` is exactly
this block and `ChannelAttention` keeps its parameters (so checkpoints and timm agree); it fixes
the bottleneck width to the paper's `channels // r` (timm rounds it to a multiple of 8) and
computes the gate from the (B, C) channel means with `F.linear` on the 1x1 convolution weights.
Same numbers, but a 1x1 convolution on a 1x1 map is a slow path on CPU: on pooled feature
vectors (head-only training) the convolutions cost 70 of 100 ms a step at batch 1024 in bf16,
the linear form ~1 ms (measured; benchmarks/RESULTS.md, head-only training speed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import SEModule


class ChannelAttention(SEModule):
    """Squeeze-excitation gate: (B, C, H, W) -> (B, C, H, W), each channel scaled by a learnt
    gate in (0, 1) computed from the channel means (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__(channels, rd_channels=max(1, channels // reduction))
        self.channels = channels
        self.reduction = reduction

    def channel_gate(self, means: torch.Tensor) -> torch.Tensor:
        """(B, C) channel means -> (B, C) gates in (0, 1)."""
        x = F.linear(means, self.fc1.weight.flatten(1), self.fc1.bias)
        x = self.act(self.bn(x[:, :, None, None])).flatten(1)
        return self.gate(F.linear(x, self.fc2.weight.flatten(1), self.fc2.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_gate(x.mean((2, 3)))[:, :, None, None]
