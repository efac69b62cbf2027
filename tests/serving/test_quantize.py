"""`emorec export --quantize int8`: a checked INT8 model that predict and serve then prefer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_models import jpeg_bytes, same_padded_onnx

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


def test_the_padding_arithmetic_of_same_padded_convolutions_is_never_quantized(tmp_path):
    """Rounding pad amounts to an int8 grid shifted whole feature maps (the faces model agreed
    with fp32 on 65% of labels): the nodes that compute them are found and left in fp32."""
    import onnx

    from emorec.serving.quantize import padding_arithmetic, quantize_model

    graph = onnx.load(str(same_padded_onnx(tmp_path / "same.onnx"))).graph
    found = padding_arithmetic(graph)
    kinds = {n.op_type for n in graph.node if n.name in found}
    assert {"Shape", "Ceil"} <= kinds and kinds.isdisjoint({"Conv", "Pad", "Gemm"})
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    activations = {o for n in graph.node if n.op_type in ("Conv", "Clip", "Pad") and n.name not in found for o in n.output}
    assert all(n.op_type == "Shape" for n in graph.node if n.name in found and set(n.input) & activations), \
        "only a Shape reads a feature map; the ReLU6 Clips are not pad arithmetic"
    calibration = np.random.default_rng(0).uniform(-2, 2, (8, 3, 33, 33)).astype(np.float32)
    quantize_model(tmp_path / "same.onnx", tmp_path / "int8.onnx", calibration)
    quantized = onnx.load(str(tmp_path / "int8.onnx")).graph
    producers = {o: n for n in quantized.node for o in n.output}
    todo, upstream = [n.input[1] for n in quantized.node if n.op_type == "Pad"], set()
    assert todo
    while todo:  # every node that computes a pad amount, back to the Shape that reads a feature map
        node = producers.get(todo.pop())
        if node is not None and node.name not in upstream:
            upstream.add(node.name)
            todo.extend(node.input if node.op_type != "Shape" else [])
    kinds = {n.op_type for n in quantized.node if n.name in upstream}
    # No computed value is rounded (a scalar constant's own int8 copy is exact, and allowed).
    assert "Ceil" in kinds and "QuantizeLinear" not in kinds
    assert any(n.op_type == "QuantizeLinear" for n in quantized.node), "the convolutions still are"


def test_leading_layers_are_the_nodes_up_to_the_first_share_of_convolutions(tmp_path):
    import onnx

    from emorec.serving.quantize import leading_layers

    graph = onnx.load(str(same_padded_onnx(tmp_path / "same.onnx"))).graph
    layers = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(layers) == 3 and leading_layers(graph, 0.0) == []
    first = leading_layers(graph, 0.3)  # one of three
    assert first[-1] == layers[0] and layers[1] not in first
    assert leading_layers(graph, 1.0)[-1] == layers[-1]


def test_a_model_that_agrees_only_with_its_first_layers_in_fp32_is_kept_and_says_so(served_run, tmp_path,
                                                                                    monkeypatch):
    import emorec.serving.quantize as quantize

    run = tmp_path / "run"
    shutil.copytree(served_run, run)
    shutil.copytree(served_run.parent / "data", tmp_path / "data")
    tried = []
    real_quantize, real_compare = quantize.quantize_model, quantize.compare

    def record(fp32_path, out_path, calibration, fp32_fraction=0.0):
        tried.append(fp32_fraction)
        return real_quantize(fp32_path, out_path, calibration, fp32_fraction)

    def fully_int8_disagrees(fp32, int8, arrays, labels):
        figures = real_compare(fp32, int8, arrays, labels)
        return {**figures, "top1_agreement": 0.5} if tried[-1] == 0.0 else figures

    monkeypatch.setattr(quantize, "quantize_model", record)
    monkeypatch.setattr(quantize, "compare", fully_int8_disagrees)
    results = export_run(run, ("onnx",), quantize="int8")
    assert tried[:2] == list(quantize.FP32_FRACTIONS[:2]) and tried[1] > 0
    int8 = OnnxClassifier(run / "export" / "model.int8.onnx")
    assert int8.metadata["int8_check"]["fp32_fraction"] == tried[-1] > 0 and results[1].extra == int8.metadata["int8_check"]
    assert quantize.describe(int8).startswith(f"INT8, first {tried[-1]:.0%} of layers in fp32 (val top-1 agreement")
