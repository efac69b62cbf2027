"""ONNX and TorchScript exports match PyTorch on real images and carry their preprocessing."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from emorec.cli import main
from emorec.errors import EmorecError
from emorec.serving.export import export_run
from emorec.serving.onnx_runtime import METADATA_KEY, OnnxClassifier
from run_factory import make_run


def test_onnx_and_torchscript_match_pytorch_and_carry_their_metadata(fake_run):
    results = export_run(fake_run, ("onnx", "torchscript"))
    assert [r.format for r in results] == ["onnx", "torchscript"]
    for result in results:
        assert result.path.is_file()
        assert result.max_abs_diff < 1e-3
        assert result.parity_inputs == "8 real images"
    # The numpy preprocessing that ONNX serving uses feeds the same pixels as torchvision.
    assert results[0].extra["preprocess_max_abs_diff"] < 1e-5

    onnx_path = results[0].path
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    meta = json.loads(props[METADATA_KEY])
    assert meta["labels"] == ["amusement", "anger", "awe", "fear"]
    assert meta["preprocessing"]["crop"] == [32, 32] and len(meta["preprocessing"]["mean"]) == 3
    assert json.loads((onnx_path.parent / "model.json").read_text()) == meta

    model = OnnxClassifier(onnx_path)  # the batch axis is dynamic
    for batch in (1, 5):
        assert model.logits(np.zeros((batch, 3, 32, 32), np.float32)).shape == (batch, 4)


@pytest.mark.parametrize("formats", [("onnx",), ("onnx", "torchscript")])
def test_a_parity_failure_refuses_the_export_and_leaves_nothing_to_serve(fake_run, tmp_path, formats):
    out = tmp_path / "export"
    with pytest.raises(EmorecError, match="differs from PyTorch .* nothing was written"):
        export_run(fake_run, formats, out, tolerance=-1.0)
    assert list(out.iterdir()) == []  # no model.onnx, model.json or temporary file


def test_a_failed_re_export_keeps_the_previous_good_files(fake_run, tmp_path):
    out = tmp_path / "export"
    [good] = export_run(fake_run, ("onnx",), out)
    before = good.path.read_bytes()
    with pytest.raises(EmorecError, match="differs from PyTorch"):
        export_run(fake_run, ("onnx",), out, tolerance=-1.0)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert good.path.read_bytes() == before


def test_numpy_preprocessing_that_drifts_from_torchvision_refuses_the_export(fake_run, tmp_path, monkeypatch):
    from emorec.data.preprocess import Preprocessing

    real_call = Preprocessing.__call__
    # 3/255 in normalised units: small, but ONNX serving would see other pixels than PyTorch.
    monkeypatch.setattr(Preprocessing, "__call__", lambda self, image: real_call(self, image) + 3 / 255)
    out = tmp_path / "export"
    with pytest.raises(EmorecError, match=r"preprocessing .* differs from the run's torchvision eval transform by 0\.0118"):
        export_run(fake_run, ("onnx",), out)
    assert not out.exists() or list(out.iterdir()) == []


def test_preprocessing_is_checked_on_synthetic_images_when_no_image_is_readable(fake_run, tmp_path):
    (fake_run / "manifest.csv").write_text("path,label,split\n/nowhere/a.jpg,anger,test\n")
    [result] = export_run(fake_run, ("onnx",), tmp_path / "export")
    assert result.parity_inputs.startswith("8 random inputs") and result.extra["preprocess_max_abs_diff"] < 1e-5


def test_an_unexportable_model_is_a_one_line_error_and_torchscript_still_works(tiny_dataset, tmp_path):
    # timm's test_vit at 32 px (native 160) resamples its position embedding with antialiased
    # bicubic interpolation, which the ONNX exporter cannot express.
    run = make_run(tmp_path / "vit", tiny_dataset, backbone="test_vit")
    with pytest.raises(EmorecError, match="ONNX export of test_vit failed"):
        export_run(run, ("onnx",))
    [result] = export_run(run, ("torchscript",))
    assert result.max_abs_diff < 1e-3


def test_cli_export_prints_the_difference(fake_run, capsys):
    assert main(["export", str(fake_run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "model.onnx" in out and "max |diff|" in out and "torchvision" in out
    assert (fake_run / "export" / "model.onnx").is_file()


def test_cli_refuses_a_missing_run(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "model not found" in capsys.readouterr().err
