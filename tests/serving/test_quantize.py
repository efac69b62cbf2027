"""`emorec export --quantize int8`: a checked INT8 model that predict and serve then prefer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_models import jpeg_bytes

from emorec.cli import main
from emorec.errors import EmorecError
from emorec.serving.export import export_run
from emorec.serving.onnx_runtime import OnnxClassifier


@pytest.fixture(scope="module")
def quantized_run(served_run, tmp_path_factory):
    """A copy of the served run with its INT8 model exported."""
    run = tmp_path_factory.mktemp("int8") / "run"
    shutil.copytree(served_run, run)
    shutil.copytree(served_run.parent / "data", run.parent / "data")  # the manifest's images, by relative path too
    results = export_run(run, ("onnx",), quantize="int8")
    return run, results


def test_int8_export_writes_a_quantized_model_with_its_check_and_the_same_labels(quantized_run):
    run, results = quantized_run
    assert [r.format for r in results] == ["onnx", "onnx-int8"]
    int8_path = run / "export" / "model.int8.onnx"
    assert results[1].path == int8_path and int8_path.is_file()
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    fp32, int8 = OnnxClassifier(run / "export" / "model.onnx"), OnnxClassifier(int8_path)
    assert int8.labels == fp32.labels and int8.metadata["preprocessing"] == fp32.metadata["preprocessing"]
    check = int8.metadata["int8_check"]
    assert check == results[1].extra and check["top1_agreement"] >= 0.98 and check["images"] > 0
    batch = np.random.default_rng(0).normal(0, 1, (4, 3, *fp32.preprocessing.crop)).astype(np.float32)
    assert not np.array_equal(int8.logits(batch), fp32.logits(batch))  # really a different (quantized) graph
    assert np.abs(int8.logits(batch) - fp32.logits(batch)).max() < 1.0


def test_a_quantized_model_that_disagrees_is_refused_naming_the_figures(served_run, tmp_path, monkeypatch):
    import emorec.serving.quantize as quantize

    run = tmp_path / "run"
    shutil.copytree(served_run, run)
    shutil.copytree(served_run.parent / "data", tmp_path / "data")
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)  # no model can meet it
    with pytest.raises(EmorecError) as info:
        export_run(run, ("onnx",), quantize="int8")
    message = str(info.value)
    assert "agrees with fp32 on" in message and ">= 101%" in message and "macro-F1" in message and "\n" not in message
    assert not (run / "export" / "model.int8.onnx").exists()
    assert (run / "export" / "model.onnx").is_file()  # the fp32 export passed and stays


def test_predict_and_serve_use_the_int8_model_and_say_so(quantized_run, tmp_path, capsys):
    run, _ = quantized_run
    photo = tmp_path / "a.jpg"
    photo.write_bytes(jpeg_bytes())
    assert main(["predict", str(run), str(photo)]) == 0
    err = capsys.readouterr().err
    assert "model.int8.onnx: ONNX Runtime, INT8 (val top-1 agreement with fp32" in err
    assert main(["predict", str(run), str(photo), "--fp32", "--device", "cpu"]) == 0
    assert "PyTorch" in capsys.readouterr().err

    from emorec.serving.backend import open_backend
    from emorec.serving.server import ServeSettings, create_app

    backend = open_backend(run, "onnx", threads=1)
    assert backend.path.name == "model.int8.onnx" and backend.precision == "int8"
    with TestClient(create_app(ServeSettings(model=str(backend.path)), backend)) as client:
        assert client.get("/v1/model").json()["precision"] == "int8"
    assert open_backend(run, "onnx", threads=1, int8=False).precision == "fp32"


def test_re_exporting_fp32_removes_the_int8_model_of_the_old_weights(quantized_run, tmp_path):
    run, _ = quantized_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copytree(run.parent / "data", tmp_path / "data")
    assert (copy / "export" / "model.int8.onnx").is_file()
    export_run(copy, ("onnx",))
    assert not (copy / "export" / "model.int8.onnx").exists()


def test_quantize_needs_the_onnx_format():
    with pytest.raises(EmorecError, match="--format onnx"):
        export_run("anything", ("torchscript",), quantize="int8")
