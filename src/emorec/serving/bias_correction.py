"""Bias correction for int8 convolution weights: each Conv's bias absorbs the mean error its
rounded weights make on real inputs, so the quantized model's outputs are not shifted.

Rounding a weight to its int8 grid moves every output of that channel by sum(dw * x); when the
inputs x do not average zero (ReLU6 outputs never do) the moves average to a constant shift,
which the next layers carry on. With BatchNorm folded into the convolutions the shifts are large:
on the built-in `faces` model (tf_efficientnet_lite0, 96 px) the weights' rounding alone cost 2.2%
top-1 agreement with fp32, most of it as such shifts, and correcting them took the fully int8
model from 97.0% to 98.1% agreement (benchmarks/RESULTS.md, "INT8"). The correction is the
data-driven bias correction of Nagel et al. 2019 (Data-Free Quantization, section 4.2) with the
mean inputs measured on calibration images instead of inferred from BatchNorm statistics.
ONNX Runtime's quantizer has no such step (its GPTQ and SmoothQuant passes are for MatMul), so
it is done here, on the fp32 graph, just before `quantize_static`: the rounding predicted is
ONNX Runtime's own for per-channel symmetric int8 weights (scale = max |w| / 127, round half to
even), so the correction matches the weights it writes.
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127  # symmetric int8 weights use -127..127
STATS_BATCH = 8  # calibration images per pass: every Conv's input is held at once


def _attribute(node, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return list(attribute.ints) if attribute.ints else (attribute.s or attribute.i)
    return default


def int8_weight_error(weight: np.ndarray) -> np.ndarray:
    """What per-output-channel symmetric int8 rounding adds to `weight` (dequantized - original)."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float32)
    scale = np.abs(flat).max(axis=1, keepdims=True) / INT8_MAX
    scale[scale == 0] = 1.0
    rounded = np.clip(np.round(flat / scale), -INT8_MAX, INT8_MAX) * scale
    return (rounded.astype(np.float64) - flat).reshape(weight.shape)


def patch_sums(x: np.ndarray, kernel: tuple[int, int], pads: list[int], strides: list[int],
               dilations: list[int]) -> tuple[np.ndarray, int]:
    """(sum over images and output positions of the input each kernel tap reads, (C, kh, kw); how
    many positions were summed): the zero padding included, as the convolution sees it."""
    top, left, bottom, right = pads
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    out_h = (padded.shape[2] - (kh - 1) * dh - 1) // sh + 1
    out_w = (padded.shape[3] - (kw - 1) * dw - 1) // sw + 1
    sums = np.empty((x.shape[1], kh, kw))
    for i in range(kh):
        for j in range(kw):
            taps = padded[:, :, i * dh:i * dh + sh * (out_h - 1) + 1:sh, j * dw:j * dw + sw * (out_w - 1) + 1:sw]
            sums[:, i, j] = taps.sum(axis=(0, 2, 3))
    return sums, x.shape[0] * out_h * out_w


def _correctable(graph, skip: set[str]) -> list:
    """The 2-D Convs whose weight (and bias) are constants of their own, not kept in fp32."""
    from collections import Counter

    constants = {init.name: init for init in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    found = []
    for node in graph.node:
        if node.op_type != "Conv" or node.name in skip or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if len(constants[node.input[1]].dims) != 4:  # 1-D and 3-D convolutions are left as they are
            continue
        if _attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            continue  # SAME_* padding: its amounts are not in the node (torch and timm exports never use it)
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if uses[node.input[1]] > 1 or (bias is not None and (bias not in constants or uses[bias] > 1)):
            continue
        found.append(node)
    return found


def _mean_inputs(model, convs: list, calibration: np.ndarray) -> dict[str, np.ndarray]:
    """Each Conv's mean input patch (C, kh, kw) over `calibration`, from the fp32 model itself."""
    import onnx
    import onnxruntime as ort

    constants = {init.name: init for init in model.graph.initializer}
    feed_name = model.graph.input[0].name
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {output.name for output in probe.graph.output}
    wanted = list(dict.fromkeys(node.input[0] for node in convs if node.input[0] != feed_name))
    for name in wanted:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(calibration), STATS_BATCH):
        batch = calibration[start:start + STATS_BATCH]
        tensors = dict(zip(wanted, session.run(wanted, {feed_name: batch}))) if wanted else {}
        tensors[feed_name] = batch
        for node in convs:
            kernel = tuple(constants[node.input[1]].dims[2:])
            total, count = patch_sums(tensors[node.input[0]], kernel, _attribute(node, "pads", [0, 0, 0, 0]),
                                      _attribute(node, "strides", [1, 1]), _attribute(node, "dilations", [1, 1]))
            sums[node.name] = sums.get(node.name, 0) + total
            counts[node.name] = counts.get(node.name, 0) + count
    return {name: sums[name] / counts[name] for name in sums}


def correct_int8_bias(model, calibration: np.ndarray, skip: set[str] = frozenset()) -> list[str]:
    """Shift the bias of every 2-D Conv of `model` (an onnx ModelProto, changed in place) that will
    get int8 weights by minus the mean error those weights make on the `calibration` batch (N, C,
    H, W); Convs named in `skip` (kept in fp32) are left alone. Returns the names of the Convs
    corrected. The fp32 model's outputs move by exactly those means: it is the input to
    quantization only, never a model to serve."""
    from onnx import numpy_helper

    convs = _correctable(model.graph, set(skip))
    if not convs or len(calibration) == 0:
        return []
    means = _mean_inputs(model, convs, calibration)
    constants = {init.name: init for init in model.graph.initializer}
    for node in convs:
        weight = numpy_helper.to_array(constants[node.input[1]])
        groups = _attribute(node, "group", 1)
        error = int8_weight_error(weight)
        out_channels, in_per_group = weight.shape[:2]
        mean = means[node.name].reshape(groups, in_per_group, *weight.shape[2:])
        shift = np.einsum("gocij,gcij->go", error.reshape(groups, out_channels // groups, *weight.shape[1:]), mean)
        if len(node.input) > 2 and node.input[2]:
            bias_name = node.input[2]
            bias = numpy_helper.to_array(constants[bias_name]).astype(np.float64)
            constants[bias_name].CopyFrom(numpy_helper.from_array((bias - shift.reshape(-1)).astype(np.float32), bias_name))
        else:
            bias_name = f"{node.name}_int8_bias_correction"
            model.graph.initializer.append(numpy_helper.from_array((-shift.reshape(-1)).astype(np.float32), bias_name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = bias_name
    return [node.name for node in convs]
