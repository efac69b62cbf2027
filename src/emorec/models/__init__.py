"""emorec.models: timm backbone -> channel attention -> MLP head (see docs/ARCHITECTURE.md)."""

from emorec.models.attention import ChannelAttention
from emorec.models.backbone import backbone_data_config, create_backbone, feature_map, load_weights
from emorec.models.classifier import (
    EmotionClassifier,
    build_model,
    model_signature,
    parameter_summary,
    set_backbone_trainable,
    set_batchnorm_frozen,
)
from emorec.models.head import EmotionHead

__all__ = [
    "ChannelAttention",
    "EmotionClassifier",
    "EmotionHead",
    "backbone_data_config",
    "build_model",
    "create_backbone",
    "feature_map",
    "load_weights",
    "model_signature",
    "parameter_summary",
    "set_backbone_trainable",
    "set_batchnorm_frozen",
]
