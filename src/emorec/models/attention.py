"""Channel attention on the backbone's last feature map.

Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018): global average
pooling squeezes each channel to one number, a two-layer bottleneck (reduction r) with a sigmoid
turns those into per-channel gates, and the map is rescaled by them. timm's `SEModule` is exactly
this block; `ChannelAttention` only fixes the bottleneck width to the paper's `channels // r`
(timm rounds it to a multiple of 8 by default).
"""

from __future__ import annotations

from timm.layers import SEModule


class ChannelAttention(SEModule):
    """Squeeze-excitation gate: (B, C, H, W) -> (B, C, H, W), each channel scaled by a learnt
    gate in (0, 1) computed from the channel means (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__(channels, rd_channels=max(1, channels // reduction))
        self.channels = channels
        self.reduction = reduction
