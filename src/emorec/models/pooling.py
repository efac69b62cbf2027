"""Feature maps -> the vector the head reads: one stage or every stage, pooled per channel.

Image emotion lives in low-level cues too (colour, texture, composition), not only in the last
layer's object features: multi-level representations beat last-layer ones on image emotion
(Rao et al., "Learning multi-level deep representations for image emotion classification",
2019; MDAN, Xu et al. 2022). `feature_levels="all"` therefore pools the output of every stage
of the backbone (timm's `forward_intermediates`; see `backbone.backbone_levels`) and
concatenates the vectors, shallow stages first.

Pooling per channel of an (B, C, H, W) map:
- `avg`: the mean, C values (what the last-level head always read).
- `meanstd`: the mean, then the standard deviation (population), 2C values. The spread of a
  channel over the image is a texture / contrast statistic (the Gram-matrix style statistics of
  neural style transfer, of which mean and std are the diagonal part: Huang & Belongie 2017).
- `gem`: generalised mean (Radenovic et al., TPAMI 2019) with a fixed p = 3, C values, between
  the mean (p = 1) and the max (p -> inf). Activations are clamped at 1e-6 first, as in the
  paper: it is meant for non-negative (ReLU-family) maps.

Pooling runs in float32 whatever the autocast dtype: a std in bf16 loses most of its digits.
The layout is fixed: level after level, and within a `meanstd` level all means before all stds,
so the vector of a cheaper setting (the last level, or means only) is a column subset of the
`all` / `meanstd` vector (`select_columns`): one extraction serves every variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

POOLINGS = ("avg", "meanstd", "gem")
LEVELS = ("last", "all")
GEM_P = 3.0
GEM_EPS = 1e-6


def pool_map(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) or (B, 2C) for `meanstd`, in float32."""
    x = x.float()
    if pooling == "avg":
        return x.mean(dim=(2, 3))
    if pooling == "meanstd":
        mean = x.mean(dim=(2, 3))
        # sqrt of the centred second moment; the epsilon keeps the gradient finite on flat maps.
        var = (x - mean[:, :, None, None]).square().mean(dim=(2, 3))
        return torch.cat([mean, (var + 1e-12).sqrt()], dim=1)
    if pooling == "gem":
        return x.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
    raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")


def pool_levels(maps: Sequence[torch.Tensor], pooling: str) -> torch.Tensor:
    """Each map pooled, concatenated in order: (B, pooled_width(channels, pooling))."""
    return torch.cat([pool_map(m, pooling) for m in maps], dim=1)


def pooling_factor(pooling: str) -> int:
    return 2 if pooling == "meanstd" else 1


def pooled_width(channels: Sequence[int], pooling: str) -> int:
    return pooling_factor(pooling) * sum(int(c) for c in channels)


def select_columns(channels: Sequence[int], levels: str, pooling: str) -> list[int]:
    """Columns of an `all` + `meanstd` vector (levels with `channels`) that make the vector of
    (`levels`, `pooling`), for pooling `avg` or `meanstd` (a GeM vector is not a subset)."""
    if pooling not in ("avg", "meanstd") or levels not in LEVELS:
        raise ValueError(f"only avg / meanstd vectors of the last or all levels are column subsets, not "
                         f"{levels}/{pooling}")
    columns, start = [], 0
    for i, c in enumerate(channels):
        keep = levels == "all" or i == len(channels) - 1
        if keep:
            columns += range(start, start + c)  # the means
            if pooling == "meanstd":
                columns += range(start + c, start + 2 * c)  # the stds
        start += 2 * c
    return columns
