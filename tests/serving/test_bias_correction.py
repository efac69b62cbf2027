"""Bias correction before INT8 quantization: each Conv's bias absorbs the mean error of its rounded weights."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from emorec.serving.bias_correction import correct_int8_bias, int8_weight_error, patch_sums  # noqa: E402


def _outlier_model() -> torch.nn.Module:
    """Full, depthwise (stride 2) and pointwise convolutions whose weights each have one outlier
    per channel, so int8 rounds the others coarsely; ReLU6 keeps the activations positive, as in
    the Lite backbones, so the rounding errors do not average out."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 4, 1, bias=False), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with torch.no_grad():
        for conv in (model[0], model[2], model[4]):
            weight = conv.weight.view(conv.weight.shape[0], -1)
            weight.mul_(0.2)
            weight[:, 0] = 20 * weight.abs().max(dim=1).values
    return model


def _export(model, path, size=16):
    torch.onnx.export(model, (torch.rand(1, 3, size, size),), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    return path


def _run(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def test_the_patch_mean_is_what_each_kernel_tap_reads_padding_included():
    x = np.random.default_rng(0).normal(1, 1, (2, 3, 9, 8)).astype(np.float32)
    pads, strides, dilations = [1, 0, 2, 1], [2, 1], [1, 2]
    sums, count = patch_sums(x, (3, 2), pads, strides, dilations)
    padded = torch.nn.functional.pad(torch.from_numpy(x).double(), (pads[1], pads[3], pads[0], pads[2]))
    columns = torch.nn.functional.unfold(padded, (3, 2), dilation=dilations, stride=strides)  # N, C*3*2, L
    assert count == columns.shape[0] * columns.shape[2]
    np.testing.assert_allclose(sums.reshape(-1), columns.sum(dim=(0, 2)).numpy(), rtol=1e-10)


def test_the_predicted_rounding_is_onnx_runtimes_own(tmp_path):
    """The correction is only right if ONNX Runtime rounds the weights the way it is predicted."""
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path = _export(_outlier_model(), tmp_path / "fp32.onnx")
    batches = iter([{"image": np.random.default_rng(1).uniform(0, 2, (4, 3, 16, 16)).astype(np.float32)}])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantize_static(str(path), str(tmp_path / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    quantized = onnx.load(str(tmp_path / "int8.onnx")).graph
    constants = {i.name: numpy_helper.to_array(i) for i in quantized.initializer}
    checked = 0
    for node in (n for n in quantized.node if n.op_type == "DequantizeLinear"):
        name = node.input[0].removesuffix("_quantized")
        if name in original and original[name].ndim == 4:
            scale = constants[node.input[1]].reshape(-1, 1, 1, 1)
            dequantized = constants[node.input[0]].astype(np.float64) * scale
            np.testing.assert_allclose(dequantized - original[name], int8_weight_error(original[name]), atol=1e-6)
            checked += 1
    assert checked == 3


def test_corrected_biases_take_the_mean_shift_out_of_the_int8_model(tmp_path, monkeypatch):
    import emorec.serving.bias_correction as bias_correction
    from emorec.serving.quantize import quantize_model

    path = _export(_outlier_model(), tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 2, (32, 3, 16, 16)).astype(np.float32)
    held_out = rng.uniform(0, 2, (64, 3, 16, 16)).astype(np.float32)
    fp32 = _run(path, held_out)

    assert quantize_model(path, tmp_path / "corrected.onnx", calibration) == 3  # every Conv, the bias-less one too
    corrected_shift = np.abs((_run(tmp_path / "corrected.onnx", held_out) - fp32).mean(axis=0))
    monkeypatch.setattr(bias_correction, "correct_int8_bias", lambda model, calibration, skip=(): [])
    quantize_model(path, tmp_path / "plain.onnx", calibration)
    plain_shift = np.abs((_run(tmp_path / "plain.onnx", held_out) - fp32).mean(axis=0))
    assert plain_shift.mean() > 0.005 * np.abs(fp32).mean(), "the rounding must shift the plain model's outputs"
    assert corrected_shift.mean() < 0.3 * plain_shift.mean()


def test_convolutions_kept_in_fp32_keep_their_bias(tmp_path):
    from onnx import numpy_helper

    model = onnx.load(str(_export(_outlier_model(), tmp_path / "fp32.onnx")))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    before = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    calibration = np.random.default_rng(0).uniform(0, 2, (8, 3, 16, 16)).astype(np.float32)
    corrected = correct_int8_bias(model, calibration, skip={convs[0].name})
    assert corrected == [convs[1].name, convs[2].name]
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_array_equal(after[convs[0].input[2]], before[convs[0].input[2]])
    assert not np.array_equal(after[convs[1].input[2]], before[convs[1].input[2]])
    assert len(convs[2].input) == 3 and convs[2].input[2] in after  # the bias-less Conv got one
    for node in convs:
        np.testing.assert_array_equal(after[node.input[1]], before[node.input[1]])  # weights untouched


def test_a_convolution_whose_padding_is_not_in_the_node_is_left_alone():
    """auto_pad SAME_*: the amounts depend on the input size, so the taps' means are not computed
    (torch and timm exports write explicit pads; other exporters may not)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["same"], name="same", auto_pad="SAME_UPPER"),
             helper.make_node("Conv", ["image", "w2", "b2"], ["explicit"], name="explicit", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("same", "explicit")],
                              [weight, bias, numpy_helper.from_array(numpy_helper.to_array(weight), "w2"),
                               numpy_helper.from_array(np.zeros(4, np.float32), "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert correct_int8_bias(model, rng.uniform(0, 2, (4, 3, 8, 8)).astype(np.float32)) == ["explicit"]
