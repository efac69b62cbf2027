"""Backbones: any timm model gives a (B, C, H, W) map; local weight files load or fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emorec.errors import EmorecError
from emorec.models.backbone import backbone_data_config, create_backbone, feature_map, load_weights

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LITE0 = SHARED / "weights" / "tf_efficientnet_lite0" / "model.safetensors"


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_convnext", "test_vit"])
def test_every_layout_becomes_a_channels_first_map(name):
    model = create_backbone(name, pretrained=False).eval()
    with torch.no_grad():
        fmap = feature_map(model, torch.randn(2, 3, 64, 64))
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, model.num_features)


def test_vit_tokens_lose_the_class_token_and_fold_into_the_patch_grid():
    model = create_backbone("test_vit", pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        fmap = feature_map(model, x)
    prefix = model.num_prefix_tokens
    assert prefix >= 1 and tokens.shape[1] == prefix + fmap.shape[2] * fmap.shape[3]
    # Patch (row 1, column 2) of the grid is token prefix + 1 * width + 2.
    w = fmap.shape[3]
    assert torch.equal(fmap[0, :, 1, 2], tokens[0, prefix + w + 2])


@pytest.mark.parametrize(
    "name, size, channels, grid",
    [
        # ViT-B/16: 224 / 16 = 14 patches a side, the class token dropped. About 3 s to build here.
        pytest.param("vit_base_patch16_clip_224.openai", 224, 768, (14, 14), marks=pytest.mark.slow),
        # Convolutional backbones reduce by 32: 64 px gives a 2 x 2 map.
        ("convnext_tiny", 64, 768, (2, 2)),
        ("efficientnet_b3", 64, 1536, (2, 2)),
    ],
    ids=["vit_base_patch16_clip_224", "convnext_tiny", "efficientnet_b3"],
)
def test_the_recipe_backbones_build_offline(name, size, channels, grid):
    model = create_backbone(name, pretrained=False).eval()
    with torch.no_grad():
        fmap = feature_map(model, torch.randn(1, 3, size, size))
    assert model.num_features == channels
    assert fmap.shape == (1, channels, *grid)


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(EmorecError, match="model.backbone 'resnet_51'"):
        create_backbone("resnet_51", pretrained=False)


# -- local weights ----------------------------------------------------------------------------


def _lite0_weights() -> Path:
    if not LITE0.is_file():
        pytest.skip(f"needs {LITE0} (the ../shared folder beside the repository)")
    return LITE0


def test_shared_efficientnet_lite_weights_load_completely_with_their_preprocessing():
    path = _lite0_weights()
    from safetensors.torch import load_file

    model = create_backbone("tf_efficientnet_lite0", pretrained=False)
    report = load_weights(model, path)
    assert report.missing == [] and report.unexpected == []
    saved = load_file(str(path))
    assert torch.equal(model.state_dict()["conv_stem.weight"], saved["conv_stem.weight"])
    assert torch.equal(model.state_dict()["blocks.6.0.conv_pwl.weight"], saved["blocks.6.0.conv_pwl.weight"])
    # config.json beside the file: EfficientNet-Lite expects inputs scaled to [-1, 1].
    cfg = backbone_data_config(model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["interpolation"] == "bicubic" and cfg["input_size"] == (3, 224, 224)


def test_create_backbone_with_weights_loads_them_instead_of_downloading():
    path = _lite0_weights()
    from safetensors.torch import load_file

    model = create_backbone("tf_efficientnet_lite0", pretrained=True, weights=str(path))
    assert torch.equal(model.state_dict()["bn2.weight"], load_file(str(path))["bn2.weight"])


def test_torchvision_resnet_keys_load_into_the_timm_resnet(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("resnet18", pretrained=False)
    report = load_weights(model, path)
    assert report.missing == [] and report.unexpected == []  # fc.* is the classifier: dropped
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], source.state_dict()["layer4.1.conv2.weight"])


def test_wrapped_and_ddp_prefixed_checkpoints_load(tmp_path):
    source = create_backbone("test_resnet", pretrained=False)
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_backbone("test_resnet", pretrained=False)
    report = load_weights(model, path)
    assert report.missing == [] and report.loaded == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_unknown_keys_are_reported_not_fatal(tmp_path):
    state = create_backbone("test_resnet", pretrained=False).state_dict()
    state["extra.proj.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    report = load_weights(create_backbone("test_resnet", pretrained=False), path)
    assert report.unexpected == ["extra.proj.weight"] and report.missing == []


def test_weights_of_another_architecture_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(create_backbone("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(EmorecError, match="resnet.pth does not fit this backbone"):
        load_weights(create_backbone("test_convnext", pretrained=False), path)


def test_a_tensor_of_the_wrong_shape_is_refused(tmp_path):
    state = create_backbone("test_resnet", pretrained=False).state_dict()
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(EmorecError, match=f"bad_shape.pth: tensor '{key}' has shape"):
        load_weights(create_backbone("test_resnet", pretrained=False), path)


def test_a_partial_file_is_refused_listing_missing_keys(tmp_path):
    state = create_backbone("test_resnet", pretrained=False).state_dict()
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4")}, path)
    with pytest.raises(EmorecError, match="partial.pth does not fit.*missing.*layer4"):
        load_weights(create_backbone("test_resnet", pretrained=False), path)


def test_missing_or_unreadable_files_are_user_errors(tmp_path):
    model = create_backbone("test_resnet", pretrained=False)
    with pytest.raises(EmorecError, match="weights file not found: .*nope.pth"):
        load_weights(model, tmp_path / "nope.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(EmorecError, match="junk.safetensors could not be read"):
        load_weights(model, junk)
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(EmorecError, match="no_tensors.pt holds no state dict"):
        load_weights(model, tmp_path / "no_tensors.pt")
