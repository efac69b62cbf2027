"""The head: squeeze-excitation, pooling, MLP with progressive dropout, logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emorec.models.attention import ChannelAttention
from emorec.models.head import EmotionHead


def test_channel_attention_scales_each_channel_by_a_gate_between_zero_and_one():
    torch.manual_seed(0)
    attention = ChannelAttention(64, reduction=16)
    assert attention.fc1.out_channels == 4  # the bottleneck is channels // reduction
    x = torch.rand(2, 64, 5, 5) + 0.1
    gate = attention(x) / x
    # One gate per (sample, channel), the same at every position, strictly inside (0, 1).
    assert torch.allclose(gate, gate[:, :, :1, :1].expand_as(gate), atol=1e-6)
    assert bool(((gate > 0) & (gate < 1)).all())


def test_channel_attention_computes_what_timm_se_module_computes_with_the_same_weights():
    # The gate goes through F.linear instead of 1x1 convolutions (a slow path on CPU): same numbers.
    from timm.layers import SEModule

    torch.manual_seed(1)
    ours = ChannelAttention(64, reduction=16)
    timm_se = SEModule(64, rd_channels=4)
    timm_se.load_state_dict(ours.state_dict())  # the same parameters, so checkpoints carry over
    x = torch.randn(3, 64, 6, 6)
    assert torch.allclose(ours(x), timm_se(x), atol=1e-6)


def test_the_recipe_head_layers_and_dropout_rates():
    head = EmotionHead(2048, 8)
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Dropout] * 3
    assert [m.out_features for m in head.mlp if isinstance(m, nn.Linear)] == [1024, 512, 256]
    assert [m.p for m in head.mlp if isinstance(m, nn.Dropout)] == [0.3, 0.15, 0.075]
    assert isinstance(head.attention, ChannelAttention)
    assert head.classifier.out_features == 8
    assert head(torch.randn(4, 2048, 7, 7)).shape == (4, 8)


def test_empty_hidden_dims_is_a_linear_classifier_and_attention_can_be_switched_off():
    head = EmotionHead(32, 3, attention=False, hidden_dims=(), dropout=())
    assert isinstance(head.attention, nn.Identity) and len(head.mlp) == 0
    x = torch.randn(2, 32, 3, 3)
    expected = head.classifier(x.mean(dim=(2, 3)))
    assert torch.allclose(head(x), expected, atol=1e-6)


@pytest.mark.parametrize("attention", [True, False])
def test_pooled_vectors_give_the_same_logits_as_the_map(attention):
    """The frozen-feature trainer caches pooled vectors: its head must fit the full model."""
    torch.manual_seed(0)
    head = EmotionHead(48, 5, attention=attention, hidden_dims=(16,), dropout=(0.3,), activation="relu").eval()
    fmap = torch.randn(3, 48, 4, 4)
    assert torch.allclose(head(fmap), head(fmap.mean(dim=(2, 3))), atol=1e-5)


def test_hidden_dims_and_dropout_must_pair_up():
    with pytest.raises(ValueError, match="one dropout rate per hidden layer"):
        EmotionHead(16, 2, hidden_dims=(8, 4), dropout=(0.1,))
