"""INT8 ONNX: ONNX Runtime static quantization of an exported model, checked against fp32.

Static quantization (weights and activations in int8, activation ranges calibrated on real
training images) in the QDQ format with per-channel weight scales: the format ONNX Runtime
recommends for CPUs, and per-channel scales keep depthwise convolutions (EfficientNet, MobileNet)
accurate where one scale per tensor loses them. Calibration takes the 99.999th percentile of each
activation over a few hundred training images, spread over the split and prepared with the same
PIL + numpy preprocessing that serving uses, one batch at a time (bounded memory).

TensorFlow-style 'same' padding (timm's tf_* backbones) is folded into constant pads first
(`static_pads`, as `export` does), so ONNX Runtime fuses each Pad into its Conv. Where it cannot be
(an image size that varies), its shape arithmetic is never quantized (`padding_arithmetic`):
rounded pad amounts were what made the built-in faces model agree with fp32 on only 65% of its
val labels (benchmarks/RESULTS.md, "INT8"). Each Conv that gets int8 weights first has its bias
corrected for the mean error of their rounding (`bias_correction`): the faces model's weights,
rounded, shifted its outputs enough to hold it at 97.0% agreement fully int8; corrected, 98.1%.
A quantized model is written only when it agrees
with the fp32 model on the val split: top-1 agreement of at least `MIN_AGREEMENT` and macro-F1
no more than `MAX_F1_DROP` below fp32's. When the fully quantized model misses that, the first
layers are kept in fp32, a growing share (`FP32_FRACTIONS`), until it agrees; if none does, the
export is refused with the figures. What was measured is stored in the model's metadata
(`int8_check`, with `fp32_fraction`), so `predict` and `serve` can say what they are running.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from emorec.data.preprocess import Preprocessing
from emorec.errors import EmorecError
from emorec.serving.onnx_runtime import METADATA_KEY, OnnxClassifier

INT8_FILE_NAME = "model.int8.onnx"
MIN_AGREEMENT = 0.98
MAX_F1_DROP = 0.01
CALIBRATION_IMAGES = 256
CHECK_IMAGES = 2000  # val images scored by both models, at most
CALIBRATION_BATCH = 16
# Tried in turn until the check passes: the share of layers (from the input on) kept in fp32, in
# small steps because each step costs speed: the first layers see the highest resolution. With bias
# correction both built-in models pass fully int8 (faces 98.1%, photos 99.4%); without it faces
# needed 15% (98.05%), which ran 1.25-1.35x fp32 where fully int8 runs 1.46x / 1.92x at batch 1 / 16
# (benchmarks/RESULTS.md, "INT8").
# Only a leading block is ever kept: a layer kept in fp32 *between* int8 ones is not fp32 at run
# time, since ONNX Runtime's
# WeightBiasQuantization rewrite quantizes a Conv's weights per tensor when its input comes from a
# DequantizeLinear (one depthwise layer so kept cut the faces model's agreement to 87%).
FP32_FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def _split_paths(run_home: Path, split: str, limit: int) -> list[tuple[Path, str]]:
    """(path, label) of up to `limit` images of `split` in the run's manifest, evenly spread over
    it (manifests are often sorted by class: the first `limit` could miss whole classes)."""
    manifest = run_home / "manifest.csv"
    if not manifest.is_file():
        raise EmorecError(f"{run_home} has no manifest.csv: INT8 export calibrates on its train split and checks on "
                          "its val split; export a run directory made by `emorec train`")
    with manifest.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("split") or "") == split]
    picked = rows if len(rows) <= limit else [rows[i * len(rows) // limit] for i in range(limit)]
    return [(Path(r["path"]), r["label"]) for r in picked]


def _prepared(items: list[tuple[Path, str]], preprocessing: Preprocessing) -> tuple[np.ndarray, list[str]]:
    """Preprocessed arrays and labels of the readable images among `items` (unreadable ones skipped)."""
    from emorec.data.inputs import Failure, load_or_failure

    arrays, labels = [], []
    for path, label in items:
        image = load_or_failure(path, max(preprocessing.resize))
        if isinstance(image, Failure):
            continue
        arrays.append(preprocessing(image))
        labels.append(label)
    if not arrays:
        return np.zeros((0, 3, *preprocessing.crop), np.float32), labels
    return np.stack(arrays).astype(np.float32), labels


def _calibration_reader(arrays: np.ndarray, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    starts = range(0, len(arrays), CALIBRATION_BATCH)

    class Batches(CalibrationDataReader):
        """The calibration batches; `set_range` (in batches) lets ONNX Runtime collect them a
        stride at a time (CalibStridedMinMax), so histograms are built per batch instead of from
        every batch's activations held at once (21 GB for a multi-level lite0 model at 224 px)."""

        def __init__(self):
            self.set_range(0, len(starts))

        def __len__(self):
            return len(starts)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.starts = iter(starts[start_index:end_index])

        def get_next(self):
            start = next(self.starts, None)
            return None if start is None else {input_name: arrays[start:start + CALIBRATION_BATCH]}

    return Batches()


def padding_arithmetic(graph) -> list[str]:
    """Names of the nodes that compute a Pad's amounts from a tensor's shape (Shape, Sub, Ceil,
    Clip, ...: TensorFlow's 'same' padding, which timm's tf_* models export as graph arithmetic).
    They must stay out of quantization: Clip, Add and Mul are quantizable ops, and pad amounts
    rounded to a uint8 grid shifted every feature map of a stride-2 depthwise convolution
    (tf_efficientnet_lite0 faces model: 65% top-1 agreement with fp32, 97.4% with them left out)."""
    producers = {output: node for node in graph.node for output in node.output}
    todo = [node.input[1] for node in graph.node if node.op_type == "Pad" and len(node.input) > 1]
    found: dict[str, None] = {}
    while todo:
        node = producers.get(todo.pop())
        if node is None or node.name in found:
            continue
        found[node.name] = None
        if node.op_type != "Shape":  # a Shape's input is the activation itself: the walk ends there
            todo.extend(node.input)
    return list(found)


def leading_layers(graph, fraction: float) -> list[str]:
    """Names of the nodes up to and including the first `fraction` of the Conv / Gemm / MatMul
    layers, in the graph's (topological) order: the stem and the first blocks, which see the
    input's full resolution and are the most sensitive to int8 (the usual first layers in fp32)."""
    layers = [i for i, node in enumerate(graph.node) if node.op_type in ("Conv", "Gemm", "MatMul")]
    count = math.ceil(fraction * len(layers)) if fraction > 0 else 0
    if count == 0:
        return []
    return [node.name for node in graph.node[:layers[count - 1] + 1]]


def quantize_model(fp32_path: Path, out_path: Path, calibration: np.ndarray, fp32_fraction: float = 0.0) -> int:
    """Write the INT8 (QDQ, per-channel) model of `fp32_path` to `out_path`, metadata kept; the
    first `fp32_fraction` of its layers stay in fp32 (`leading_layers`), and every quantized Conv's
    bias absorbs the mean error of its rounded weights (`bias_correction`). Returns how many
    Convs were so corrected."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from emorec.serving.bias_correction import correct_int8_bias
    from emorec.serving.static_pads import fold_static_pads

    fp32 = onnx.load(str(fp32_path))
    metadata = {p.key: p.value for p in fp32.metadata_props}
    input_name = fp32.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="emorec-int8-") as scratch:
        folded, prepared = Path(scratch) / "folded.onnx", Path(scratch) / "prepared.onnx"
        fold_static_pads(fp32)  # exports made before the fold was part of `export`
        onnx.save(fp32, str(folded))
        # Shape inference and graph fusions first, as ONNX Runtime advises: quantization then
        # sees Conv + BatchNorm folded into one Conv with one per-channel scale (and each
        # constant Pad folded into its Conv).
        quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        kept = _kept_in_fp32(model.graph, fp32_fraction)
        corrected = correct_int8_bias(model, calibration, skip=set(kept))
        onnx.save(model, str(prepared))
        quantize_static(str(prepared), str(out_path), _calibration_reader(calibration, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
                        nodes_to_exclude=kept,
                        extra_options={"CalibTensorRangeSymmetric": False, "CalibStridedMinMax": 1})
    quantized = onnx.load(str(out_path))
    del quantized.metadata_props[:]
    for key, value in metadata.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(quantized, str(out_path))
    return len(corrected)


def _kept_in_fp32(graph, fp32_fraction: float) -> list[str]:
    return list(dict.fromkeys(padding_arithmetic(graph) + leading_layers(graph, fp32_fraction)))


def compare(fp32: OnnxClassifier, int8: OnnxClassifier, arrays: np.ndarray, labels: list[str]) -> dict:
    """Top-1 agreement of the two models and each one's macro-F1 on `arrays` (true `labels`)."""
    from sklearn.metrics import f1_score

    batches = range(0, len(arrays), 64)
    a = np.concatenate([fp32.logits(arrays[i:i + 64]) for i in batches]).argmax(1)
    b = np.concatenate([int8.logits(arrays[i:i + 64]) for i in batches]).argmax(1)
    truth = np.array([fp32.labels.index(label) if label in fp32.labels else -1 for label in labels])
    known = truth >= 0
    classes = list(range(len(fp32.labels)))

    def macro_f1(pred):
        return float(f1_score(truth[known], pred[known], labels=classes, average="macro", zero_division=0))

    return {"images": int(len(arrays)), "top1_agreement": float((a == b).mean()),
            "macro_f1_fp32": macro_f1(a), "macro_f1_int8": macro_f1(b)}


def calibration_and_check(run_home: Path, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(calibration arrays, check arrays, check labels): up to CALIBRATION_IMAGES of the run's
    train split and CHECK_IMAGES of its val split, spread over each, preprocessed as serving does."""
    calibration, _ = _prepared(_split_paths(run_home, "train", CALIBRATION_IMAGES), preprocessing)
    check, check_labels = _prepared(_split_paths(run_home, "val", CHECK_IMAGES), preprocessing)
    return calibration, check, check_labels


def quantize_run(fp32_path: Path, run_home: Path, min_agreement: float | None = None,
                 max_f1_drop: float | None = None) -> tuple[Path, dict]:
    """INT8 model beside `fp32_path` (RUN/export/model.int8.onnx), calibrated on the run's train
    split and checked on its val split; refused, with the figures, when it does not agree
    (defaults: MIN_AGREEMENT, MAX_F1_DROP)."""
    min_agreement = MIN_AGREEMENT if min_agreement is None else min_agreement
    max_f1_drop = MAX_F1_DROP if max_f1_drop is None else max_f1_drop
    fp32 = OnnxClassifier(fp32_path)
    calibration, check, check_labels = calibration_and_check(run_home, fp32.preprocessing)
    if len(calibration) == 0 or len(check) == 0:
        raise EmorecError(f"INT8 export needs readable train images to calibrate and val images to check on; the manifest "
                          f"of {run_home} gave {len(calibration)} and {len(check)}")
    final = fp32_path.with_name(INT8_FILE_NAME)
    temporary = final.with_name(f".{final.name}.tmp{os.getpid()}")
    try:
        for fp32_fraction in FP32_FRACTIONS:
            corrected = quantize_model(fp32_path, temporary, calibration, fp32_fraction)
            figures = compare(fp32, OnnxClassifier(temporary), check, check_labels)
            figures.update(calibration_images=int(len(calibration)), fp32_fraction=fp32_fraction,
                           bias_corrected_convs=corrected)
            drop = figures["macro_f1_fp32"] - figures["macro_f1_int8"]
            if figures["top1_agreement"] >= min_agreement and drop <= max_f1_drop:
                break
        else:
            raise EmorecError(
                f"INT8 model refused, nothing written: on {figures['images']} val images it agrees with fp32 on "
                f"{figures['top1_agreement']:.1%} of top-1 labels (needs >= {min_agreement:.0%}) and its macro-F1 is "
                f"{100 * figures['macro_f1_int8']:.1f} vs {100 * figures['macro_f1_fp32']:.1f} (may drop <= "
                f"{100 * max_f1_drop:.0f} point), even with its first {fp32_fraction:.0%} of layers in fp32; serve "
                "the fp32 model.onnx"
            )
        _record_check(temporary, figures)
        os.replace(temporary, final)
        return final, figures
    finally:
        temporary.unlink(missing_ok=True)


def _record_check(path: Path, figures: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            meta = json.loads(entry.value)
            meta["int8_check"] = figures
            entry.value = json.dumps(meta)
    onnx.save(model, str(path))


def describe(classifier: OnnxClassifier) -> str:
    """'INT8 (val top-1 agreement with fp32 99.2%, macro-F1 61.0 vs 61.3)' or 'fp32'; 'INT8, first
    20% of layers in fp32 (...)' where some were kept."""
    check = classifier.metadata.get("int8_check")
    if not check:
        return "fp32"
    kept = check.get("fp32_fraction") or 0
    part = f", first {kept:.0%} of layers in fp32" if kept else ""
    return (f"INT8{part} (val top-1 agreement with fp32 {check['top1_agreement']:.1%}, macro-F1 "
            f"{100 * check['macro_f1_int8']:.1f} vs {100 * check['macro_f1_fp32']:.1f})")
