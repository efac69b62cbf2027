"""The backbones of a search are checked before any of its budget is spent: an unknown timm name or
a weights file that is missing, unreadable or made for another model is a one-line error naming
the backbone and the fix, raised before the splits are written or any feature is extracted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from emorec.errors import EmorecError
from emorec.fit import BackboneChoice, fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import make_images, one_thread  # noqa: E402,F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(image_size=32, views=1, workers=0, progress=False, log=lambda _m: None, device="cpu", test=False)


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_images(tmp_path / "images", per_class=4, size=32)


@pytest.fixture
def nothing_is_extracted(monkeypatch):
    import emorec.fit.search as search

    def never(*args, **kwargs):
        raise AssertionError("features were extracted for a backbone that cannot run")

    monkeypatch.setattr(search, "extract_variants", never)


def weights_of(name: str, path: Path) -> Path:
    from emorec.models.backbone import create_backbone

    torch.save(create_backbone(name).state_dict(), path)
    return path


def refused(photos: Path, output: Path, choice: BackboneChoice) -> str:
    with pytest.raises(EmorecError) as raised:
        fit(photos, output, "10m", [choice], **TINY)
    message = str(raised.value)
    assert "\n" not in message and not output.exists(), "refused before the output (splits, caches) is made"
    return message


@pytest.mark.usefixtures("nothing_is_extracted")
def test_an_unknown_backbone_name_is_refused_at_the_start_with_close_names(photos, tmp_path):
    message = refused(photos, tmp_path / "o", BackboneChoice("test_efficientnett", None, pretrained=False))
    assert message.startswith("--backbone test_efficientnett: 'test_efficientnett' is not a timm model")
    assert "did you mean test_efficientnet" in message


@pytest.mark.usefixtures("nothing_is_extracted")
def test_a_missing_or_unreadable_weights_file_is_refused_at_the_start(photos, tmp_path):
    missing = tmp_path / "nowhere.pth"
    message = refused(photos, tmp_path / "o", BackboneChoice("test_efficientnet", str(missing), pretrained=False))
    assert message.startswith(f"--backbone test_efficientnet={missing}: weights file not found")
    junk = tmp_path / "notes.pth"
    junk.write_text("not a state dict")
    message = refused(photos, tmp_path / "o", BackboneChoice("test_efficientnet", str(junk), pretrained=False))
    assert message.startswith(f"--backbone test_efficientnet={junk}: weights file {junk} could not be read")


@pytest.mark.usefixtures("nothing_is_extracted")
def test_weights_of_another_model_are_refused_at_the_start_naming_the_backbone(photos, tmp_path):
    other = weights_of("test_resnet", tmp_path / "resnet.pth")
    message = refused(photos, tmp_path / "o", BackboneChoice("test_efficientnet", str(other), pretrained=False))
    assert message.startswith(f"--backbone test_efficientnet={other}: not weights of test_efficientnet")
    assert "pass the file made for test_efficientnet" in message


def test_matching_weights_pass_without_building_the_model(tmp_path, monkeypatch):
    """Names and shapes line up: the meta-device model is enough, no real build."""
    import emorec.models.timm_backbone as timm_backbone

    path = weights_of("test_efficientnet", tmp_path / "ok.pth")
    real, built = timm_backbone.create_timm_backbone, []

    def counting(name, pretrained=False, weights=None, drop_path_rate=0.0):
        model = real(name, pretrained, weights, drop_path_rate)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(timm_backbone, "create_timm_backbone", counting)
    BackboneChoice("test_efficientnet", str(path), pretrained=False).check()
    assert built == ["meta"]


def test_a_backbone_group_checks_every_member(tmp_path):
    path = weights_of("test_efficientnet", tmp_path / "ok.pth")
    with pytest.raises(EmorecError, match="not weights of test_resnet"):
        BackboneChoice("test_efficientnet+test_resnet", f"{path}+{path}", pretrained=False).check()
