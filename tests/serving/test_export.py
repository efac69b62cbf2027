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


def test_onnx_and_torchscript_match_pytorch(fake_run):
    results = export_run(fake_run, ("onnx", "torchscript"))
    assert [r.format for r in results] == ["onnx", "torchscript"]
    for result in results:
        assert result.path.is_file()
        assert result.max_abs_diff < 1e-3
        assert result.parity_inputs == "8 real images"
    # The numpy preprocessing that ONNX serving uses feeds the same pixels as torchvision.
    assert results[0].extra["preprocess_max_abs_diff"] < 1e-5


def test_onnx_file_carries_labels_and_preprocessing(fake_run):
    [result] = export_run(fake_run, ("onnx",))
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    meta = json.loads(props[METADATA_KEY])
    assert meta["labels"] == ["amusement", "anger", "awe", "fear"]
    assert meta["preprocessing"]["crop"] == [32, 32] and len(meta["preprocessing"]["mean"]) == 3
    assert json.loads((result.path.parent / "model.json").read_text()) == meta


def test_onnx_batch_axis_is_dynamic(fake_run):
    [result] = export_run(fake_run, ("onnx",))
    model = OnnxClassifier(result.path)
    for batch in (1, 5):
        assert model.logits(np.zeros((batch, 3, 32, 32), np.float32)).shape == (batch, 4)


def test_a_parity_failure_refuses_the_export(fake_run, tmp_path):
    with pytest.raises(EmorecError, match="differs from PyTorch"):
        export_run(fake_run, ("onnx",), tmp_path, tolerance=-1.0)


def test_cli_export_all_prints_the_differences(fake_run, capsys):
    assert main(["export", str(fake_run), "--format", "all"]) == 0
    out = capsys.readouterr().out
    assert "onnx" in out and "torchscript" in out and "max |diff|" in out
