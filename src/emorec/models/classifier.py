"""The whole model: a timm backbone and an `EmotionHead`, plus the helpers the trainer,
evaluation and serving share (build from config, parameter summary, signature, freezing).

By default the head reads the backbone's last feature map (and pools it itself, after its
channel attention). With `model.feature_levels=all` or another `model.pooling` the model pools
the maps into one vector first (`models/pooling.py`) and the head reads that vector: the same
vector the feature cache stores for head-only training, so a head trained on the cache serves
pixels unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emorec.errors import EmorecError
from emorec.models.backbone import backbone_levels, create_backbone, feature_map, level_channels
from emorec.models.head import ACTIVATIONS, EmotionHead
from emorec.models.pooling import LEVELS, POOLINGS, pool_levels, pooled_width


class EmotionClassifier(nn.Module):
    """image (B, 3, H, W) -> backbone feature map (B, C, h, w) -> head -> (B, K) logits; with
    `feature_levels="all"` or a `pooling` other than "avg", the maps of the chosen levels are
    pooled into a (B, D) vector first (`forward_vectors`) and the head reads that."""

    def __init__(self, backbone: nn.Module, head: EmotionHead, feature_levels: str = "last", pooling: str = "avg"):
        super().__init__()
        if feature_levels not in LEVELS or pooling not in POOLINGS:
            raise ValueError(f"feature_levels {feature_levels!r} / pooling {pooling!r}: choose from {LEVELS} / "
                             f"{POOLINGS}")
        self.backbone = backbone
        self.head = head
        self.feature_levels = feature_levels
        self.pooling = pooling
        self.backbone_frozen = False
        self.bn_frozen = False

    @property
    def head_pools(self) -> bool:
        """True for the last level with average pooling: the head gets the map and pools it."""
        return self.feature_levels == "last" and self.pooling == "avg"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map (B, C, h, w)."""
        return feature_map(self.backbone, x)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps the head's vector is pooled from: the last one, or every stage's."""
        if self.feature_levels == "all":
            return backbone_levels(self.backbone, x)
        return [self.forward_features(x)]

    def forward_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features: what the feature cache stores and the head classifies."""
        return pool_levels(self.forward_levels(x), self.pooling)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_pools:
            return self.forward_head(self.forward_features(x))
        return self.forward_head(self.forward_vectors(x))

    def train(self, mode: bool = True) -> EmotionClassifier:
        super().train(mode)
        if self.backbone_frozen:
            # A frozen backbone is a fixed feature extractor: its BatchNorm statistics and
            # dropout stay in eval mode, as when the head is trained on cached features.
            self.backbone.eval()
        elif self.bn_frozen:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def set_batchnorm_frozen(model: EmotionClassifier, frozen: bool) -> None:
    """Keep (True) the backbone's BatchNorm layers in eval mode while it trains: they normalise
    with their running statistics and never update them; their scale and shift still learn."""
    model.bn_frozen = frozen
    model.train(model.training)


def set_backbone_trainable(model: EmotionClassifier, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) the backbone; the head always trains. The optimiser
    keeps the frozen parameters: they get no gradient, so AdamW leaves them untouched."""
    for p in model.backbone.parameters():
        p.requires_grad_(trainable)
    model.backbone_frozen = not trainable
    model.train(model.training)


def build_model(model_cfg, num_classes: int) -> EmotionClassifier:
    """Backbone and head from `Config.model` (a `ModelConfig`)."""
    hidden, dropout = list(model_cfg.hidden_dims), list(model_cfg.dropout)
    if len(dropout) != len(hidden):
        raise EmorecError(f"model.dropout has {len(dropout)} rates for {len(hidden)} hidden layers "
                          f"(model.hidden_dims={hidden}); give one rate per hidden layer")
    if any(not 0.0 <= r < 1.0 for r in dropout):
        raise EmorecError(f"model.dropout={dropout}: every rate must be in [0, 1)")
    if any(d < 1 for d in hidden):
        raise EmorecError(f"model.hidden_dims={hidden}: every width must be a positive integer")
    if model_cfg.activation not in ACTIVATIONS:
        raise EmorecError(f"model.activation '{model_cfg.activation}': choose one of {', '.join(ACTIVATIONS)}")
    if model_cfg.attention_reduction < 1:
        raise EmorecError(f"model.attention_reduction={model_cfg.attention_reduction}: must be >= 1")
    if num_classes < 2:
        raise EmorecError(f"the dataset has {num_classes} class(es); a classifier needs at least 2")
    backbone = create_backbone(model_cfg.backbone, model_cfg.pretrained, model_cfg.weights, model_cfg.drop_path_rate)
    levels, pooling = model_cfg.feature_levels, model_cfg.pooling
    channels = level_channels(backbone) if levels == "all" else [backbone.num_features]
    head = EmotionHead(pooled_width(channels, pooling), num_classes, model_cfg.attention, model_cfg.attention_reduction,
                       hidden, dropout, model_cfg.activation)
    return EmotionClassifier(backbone, head, levels, pooling)


def parameter_summary(model: nn.Module) -> dict[str, Any]:
    """{'total', 'trainable'} parameter counts and 'size_mb': parameters and buffers (what a
    state dict holds) in megabytes of 10**6 bytes."""
    params = list(model.parameters())
    size = sum(p.numel() * p.element_size() for p in params)
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "size_mb": round(size / 1e6, 2),
    }


def model_signature(cfg, num_classes: int) -> dict[str, Any]:
    """What makes two models' state dicts interchangeable; a checkpoint whose signature differs
    from the config's is refused. Takes a `Config` or its `ModelConfig`."""
    model_cfg = getattr(cfg, "model", cfg)
    signature = {
        "backbone": model_cfg.backbone,
        "attention": bool(model_cfg.attention),
        "hidden_dims": [int(d) for d in model_cfg.hidden_dims],
        "num_classes": int(num_classes),
    }
    # Listed only when not the default, so checkpoints made before these settings existed match.
    if model_cfg.feature_levels != "last":
        signature["feature_levels"] = model_cfg.feature_levels
    if model_cfg.pooling != "avg":
        signature["pooling"] = model_cfg.pooling
    return signature
