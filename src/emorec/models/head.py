"""The classifier head: channel attention -> global average pool -> MLP -> logits.

Each hidden layer is Linear -> BatchNorm1d -> activation -> Dropout, with the dropout rate given
per layer (the recipe halves it layer by layer: 0.3, 0.15, 0.075), so the wide first layer is the
most regularised. An empty `hidden_dims` gives a plain linear classifier (the baseline).

The head also takes pooled (B, C) vectors, which the frozen-feature trainer caches. Because the
squeeze-excitation gate depends only on the channel means, gating then pooling a map equals
pooling then gating it: `head(fmap) == head(fmap.mean((2, 3)))` exactly, so a head trained on
cached vectors drops onto the full model unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emorec.models.attention import ChannelAttention

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class EmotionHead(nn.Module):
    """(B, C, H, W) feature map or (B, C) pooled features -> (B, num_classes) logits."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        attention: bool = True,
        reduction: int = 16,
        hidden_dims: Sequence[int] = (1024, 512, 256),
        dropout: Sequence[float] = (0.3, 0.15, 0.075),
        activation: str = "gelu",
    ):
        super().__init__()
        hidden_dims, dropout = list(hidden_dims), list(dropout)
        if len(dropout) != len(hidden_dims):
            raise ValueError(f"one dropout rate per hidden layer: {len(hidden_dims)} layers, {len(dropout)} rates")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.attention = ChannelAttention(in_channels, reduction) if attention else nn.Identity()
        layers: list[nn.Module] = []
        width = in_channels
        for dim, rate in zip(hidden_dims, dropout):
            layers += [nn.Linear(width, dim), nn.BatchNorm1d(dim), ACTIVATIONS[activation](), nn.Dropout(rate)]
            width = dim
        self.mlp = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Attention then global average pooling: (B, C, H, W) or (B, C) -> (B, C). The gate is
        per channel, so the mean of the gated map is the gated mean: the map is never rescaled."""
        means = x if x.ndim == 2 else x.mean(dim=(2, 3))
        if isinstance(self.attention, ChannelAttention):
            return means * self.attention.channel_gate(means)
        return means

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.mlp(self.pool(x)))
