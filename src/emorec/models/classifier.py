"""The whole model: a timm backbone and an `EmotionHead`, plus the helpers the trainer,
evaluation and serving share (build from config, parameter summary, signature, freezing)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emorec.errors import EmorecError
from emorec.models.backbone import create_backbone, feature_map
from emorec.models.head import ACTIVATIONS, EmotionHead


class EmotionClassifier(nn.Module):
    """image (B, 3, H, W) -> backbone feature map (B, C, h, w) -> head -> (B, K) logits."""

    def __init__(self, backbone: nn.Module, head: EmotionHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_frozen = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return feature_map(self.backbone, x)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.head(fmap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def train(self, mode: bool = True) -> EmotionClassifier:
        super().train(mode)
        if self.backbone_frozen:
            # A frozen backbone is a fixed feature extractor: its BatchNorm statistics and
            # dropout stay in eval mode, as when the head is trained on cached features.
            self.backbone.eval()
        return self


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
    head = EmotionHead(backbone.num_features, num_classes, model_cfg.attention, model_cfg.attention_reduction,
                       hidden, dropout, model_cfg.activation)
    return EmotionClassifier(backbone, head)


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
    return {
        "backbone": model_cfg.backbone,
        "attention": bool(model_cfg.attention),
        "hidden_dims": [int(d) for d in model_cfg.hidden_dims],
        "num_classes": int(num_classes),
    }
