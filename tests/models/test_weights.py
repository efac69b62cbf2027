"""Local weight files load through timm (its per-model conversions apply) or are refused loudly."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from emorec.errors import EmorecError
from emorec.models.backbone import create_backbone, load_weights


def test_shared_lite0_weights_give_the_same_backbone_as_timms_own_loader(lite0_weights):
    path = lite0_weights
    ours = create_backbone("tf_efficientnet_lite0", weights=path)
    theirs = timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=0, global_pool="",
                               pretrained_cfg_overlay=dict(file=str(path)))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_timms_conversions_apply_a_vit_file_of_another_image_size_is_resampled(tmp_path, caplog):
    # Position embeddings for a 64 px grid (4 x 4 patches) into test_vit's native 160 px (10 x 10):
    # timm's ViT checkpoint filter resamples them; a name-by-name copy would refuse the shape.
    source = timm.create_model("test_vit", img_size=64, num_classes=0, global_pool="")
    path = tmp_path / "vit64.pth"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="emorec.models"):
        model = create_backbone("test_vit", weights=path)
    assert model.pos_embed.shape[1] == source.pos_embed.shape[1] - 16 + 100
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], source.state_dict()["blocks.0.attn.qkv.weight"])
    assert "missing" not in caplog.text


def test_load_weights_into_an_existing_backbone_uses_the_same_loader(tmp_path):
    source = timm.create_model("test_vit", img_size=64, num_classes=0, global_pool="")
    path = tmp_path / "vit64.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("test_vit")
    report = load_weights(model, path)
    assert report.missing == [] and report.loaded == len(model.state_dict())
    assert torch.equal(model.state_dict()["norm.weight"], source.state_dict()["norm.weight"])


def test_weights_of_a_wider_model_are_refused_naming_the_tensor(lite0_weights):
    path = lite0_weights
    with pytest.raises(EmorecError, match=r"model.safetensors: tensor '.*' has shape .* but the backbone expects"):
        create_backbone("tf_efficientnet_lite2", weights=path)


def test_a_truncated_weights_file_is_refused(lite0_weights, tmp_path):
    broken = tmp_path / "model.safetensors"
    data = lite0_weights.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(EmorecError, match="model.safetensors could not be read"):
        create_backbone("tf_efficientnet_lite0", weights=broken)


def test_a_file_that_leaves_most_of_the_backbone_random_is_refused(tmp_path):
    state = create_backbone("test_efficientnet").state_dict()
    path = tmp_path / "stem_only.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("conv_stem")}, path)
    with pytest.raises(EmorecError, match="stem_only.pth does not fit this backbone: .* missing"):
        create_backbone("test_efficientnet", weights=path)
