"""Several backbones side by side: `model.backbone: tf_efficientnet_lite0+tf_efficientnet_lite1`.

Small backbones together make stronger features than one (issue 13: the three EfficientNet-Lite
weights concatenated). A `BackboneGroup` runs every member on the same image and concatenates
what they produce, so the rest of emorec (the head, the feature cache, head-only training,
evaluation, export) treats it as one backbone:
- the last feature map is the members' maps stacked along channels (maps of another spatial
  size are average-pooled to the smallest one, e.g. a ViT's 14 x 14 patch grid beside a CNN's
  7 x 7);
- the multi-level maps are every member's levels, member after member.
Pooled either way, the group's vector is the members' vectors one after the other (for the last
level with mean + std pooling: all means, then all stds, as for any one map; see
`group_columns`), which is how `emorec fit` builds the combined candidate from the members'
caches without running them again (`features/combine.py`).

`model.weights` names one file per member, joined by the same '+', in order; an empty part
(`+b.safetensors`) gives that member timm's hub weights (or random ones with
`model.pretrained=false`). Members must expect the same input normalisation: they see one image.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from emorec.errors import EmorecError
from emorec.models.pooling import pooling_factor
from emorec.models.timm_backbone import create_timm_backbone, feature_map, timm_level_channels, timm_levels

SEPARATOR = "+"
_NORMALISATION = ("mean", "std")


def is_group(name: str) -> bool:
    return SEPARATOR in name


def member_names(name: str) -> list[str]:
    """'a+b' -> ['a', 'b'], refusing empty names."""
    names = [n.strip() for n in name.split(SEPARATOR)]
    if len(names) < 2 or not all(names):
        raise EmorecError(f"model.backbone '{name}': join two or more timm names with '{SEPARATOR}', e.g. "
                          "tf_efficientnet_lite0+tf_efficientnet_lite1")
    return names


def member_weights(name: str, weights: str | Path | None) -> list[str | None]:
    """One weights file (or None: hub / random) per member of `name`."""
    count = len(member_names(name))
    if weights is None:
        return [None] * count
    parts = str(weights).split(SEPARATOR)
    if len(parts) != count:
        raise EmorecError(f"model.weights names {len(parts)} file(s) for {count} backbones in '{name}'; give one "
                          f"per backbone, joined by '{SEPARATOR}' in the same order (an empty part: hub weights)")
    return [p.strip() or None for p in parts]


def absolute_weights(weights: str | Path | None) -> str | None:
    """`weights` with each file made absolute (a group's parts one by one)."""
    if not weights:
        return None
    return SEPARATOR.join(str(Path(p).resolve()) if p.strip() else "" for p in str(weights).split(SEPARATOR))


class BackboneGroup(nn.Module):
    """Members run on the same input; their maps are concatenated along channels."""

    def __init__(self, members: list[nn.Module], names: list[str]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.names = list(names)
        self.num_features = sum(int(m.num_features) for m in members)
        self.pretrained_cfg = _shared_data_config(members, names)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return _stack([feature_map(m, x) for m in self.members])

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every member's levels (`timm_backbone.timm_levels`), member after member."""
        return [level for m in self.members for level in timm_levels(m, x)]

    def stage_channels(self) -> list[int]:
        return [c for m in self.members for c in timm_level_channels(m)]


def create_group(name: str, pretrained: bool, weights, drop_path_rate: float) -> BackboneGroup:
    """The members of 'a+b' built one by one (each a single timm model: groups do not nest)."""
    names = member_names(name)
    files = member_weights(name, weights)
    return BackboneGroup([create_timm_backbone(n, pretrained, w, drop_path_rate) for n, w in zip(names, files)], names)


def group_columns(member_channels: list[list[int]], feature_levels: str, pooling: str) -> list[tuple[int, list[int]]]:
    """Where each column of the group's vector comes from: (member index, that member's columns),
    in order, given each member's level channels. With every level, or one value per channel,
    the group's vector is the members' vectors in turn; the last level with mean + std is one map
    of all members' channels, so all means come before all stds."""
    factor = pooling_factor(pooling)
    if feature_levels == "all" or factor == 1:
        widths = [factor * (sum(ch) if feature_levels == "all" else ch[-1]) for ch in member_channels]
        return [(i, list(range(w))) for i, w in enumerate(widths)]
    means = [(i, list(range(ch[-1]))) for i, ch in enumerate(member_channels)]
    stds = [(i, list(range(ch[-1], 2 * ch[-1]))) for i, ch in enumerate(member_channels)]
    return means + stds


def _stack(maps: list[torch.Tensor]) -> torch.Tensor:
    height = min(m.shape[-2] for m in maps)
    width = min(m.shape[-1] for m in maps)
    return torch.cat([m if m.shape[-2:] == (height, width) else F.adaptive_avg_pool2d(m, (height, width))
                      for m in maps], dim=1)


def _shared_data_config(members: list[nn.Module], names: list[str]) -> dict:
    from timm.data import resolve_data_config

    configs = [resolve_data_config({}, model=m) for m in members]
    first = configs[0]
    for name, cfg in zip(names[1:], configs[1:]):
        for key in _NORMALISATION:
            if tuple(cfg[key]) != tuple(first[key]):
                raise EmorecError(f"backbones {names[0]} and {name} expect different input {key} "
                                  f"({tuple(first[key])} vs {tuple(cfg[key])}); group backbones whose weights share "
                                  "one normalisation (e.g. the EfficientNet-Lite family)")
    return dict(getattr(members[0], "pretrained_cfg", {}) or {}, **{k: first[k] for k in _NORMALISATION})
