"""Backbones by name: one timm model (`timm_backbone.py`) or several side by side, 'a+b'
(`backbone_group.py`). The rest of emorec asks this module for a backbone and its maps and does
not care which of the two it got.

Both kinds build on `timm_backbone.py`, and neither imports this module, so the three import
in one direction only (a group's members are single timm models).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from emorec.models.backbone_group import BackboneGroup, create_group, is_group
from emorec.models.timm_backbone import (
    MAX_MISSING_FRACTION,
    WeightsReport,
    backbone_data_config,
    create_timm_backbone,
    feature_map,
    load_weights,
    timm_level_channels,
    timm_levels,
    tokens_to_map,
)

__all__ = [
    "MAX_MISSING_FRACTION",
    "WeightsReport",
    "backbone_data_config",
    "backbone_levels",
    "create_backbone",
    "feature_map",
    "level_channels",
    "load_weights",
    "tokens_to_map",
]


def create_backbone(name: str, pretrained: bool = False, weights: str | Path | None = None,
                    drop_path_rate: float = 0.0) -> nn.Module:
    """A timm model without classifier or pooling (`timm_backbone.create_timm_backbone`), or for
    'a+b' a group of them side by side (`backbone_group.create_group`). `weights` (a local file,
    one per member joined by '+') wins over `pretrained` (timm's hub download). The model has
    `num_features` (channels of its map)."""
    if is_group(name):
        return create_group(name, pretrained, weights, drop_path_rate)
    return create_timm_backbone(name, pretrained, weights, drop_path_rate)


def backbone_levels(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every stage of `model` as (B, C, H, W) maps, shallow first, in one pass; the
    last entry is `feature_map(model, x)` itself. A group gives its members' levels in turn."""
    if isinstance(model, BackboneGroup):
        return model.stage_maps(x)
    return timm_levels(model, x)


def level_channels(model: nn.Module) -> list[int]:
    """Channels of each map `backbone_levels` returns."""
    if isinstance(model, BackboneGroup):
        return model.stage_channels()
    return timm_level_channels(model)
