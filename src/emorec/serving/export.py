"""Export a run's model to ONNX and TorchScript, each verified against PyTorch after export.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): the dynamo exporter, the default
since torch 2.9, needs the `onnxscript` package, which is not a dependency here, while the legacy
path exports our CNN/ViT backbones with a dynamic batch axis in well under a second and matches
PyTorch to ~1e-6. TorchScript uses `torch.jit.trace` (loadable from C++ and without emorec).

Verification runs the exported file on real images from the run's manifest (test split first),
pre-processed with the PIL + numpy path that ONNX serving uses, at two batch sizes (so the
dynamic batch axis is exercised), and refuses the export when the largest absolute logit
difference exceeds the tolerance (1e-3 in fp32). It also compares that PIL + numpy
preprocessing with the run's torchvision eval transform on the same images (or on synthetic
ones when none can be read) and refuses a difference above `PREPROCESS_TOLERANCE`.

Files are written under temporary names and renamed into place only when every requested format
has passed, so a refused export never leaves a model.onnx that `emorec predict` would serve.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emorec.data.preprocess import Preprocessing
from emorec.errors import EmorecError
from emorec.serving.onnx_runtime import INPUT_NAME, METADATA_KEY, OUTPUT_NAME

FORMATS = ("onnx", "torchscript")
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
PARITY_TOLERANCE = 1e-3
# Largest accepted |PIL + numpy - torchvision| input difference, in normalised units. Both paths
# resample with PIL, so it measured 0.0 on Emotion6 photos at 32 and 224 px; a wrong
# interpolation measured ~0.4 and a resize one pixel off ~3. 2/255 leaves room for float rounding
# and a one-grey-level resampling difference, nothing more.
PREPROCESS_TOLERANCE = 2 / 255
PARITY_IMAGES = 8
ONNX_OPSET = 17


@dataclass
class ExportResult:
    format: str
    path: Path
    max_abs_diff: float  # largest |exported - PyTorch| logit over the parity images
    parity_inputs: str  # what the check ran on
    extra: dict = field(default_factory=dict)
    note: str = ""  # what was checked, where a logit difference is not the measure (INT8)

    def line(self) -> str:
        if self.note:
            return f"{self.format:<12} {self.path}  {self.note}"
        return f"{self.format:<12} {self.path}  max |diff| {self.max_abs_diff:.2e} on {self.parity_inputs}"


def export_metadata(loaded, preprocessing: Preprocessing) -> dict:
    """What a server needs beside the weights: label names, preprocessing, TTA views."""
    from emorec import __version__

    cfg = loaded.cfg
    return {
        "format": "emorec-export",
        "format_version": 1,
        "labels": list(loaded.label_map.names),
        "preprocessing": preprocessing.to_dict(),
        "tta": {"hflip": cfg.eval.tta_hflip, "crops": cfg.eval.tta_crops, "mode": cfg.eval.tta_mode},
        "model": {"backbone": cfg.model.backbone, "image_size": cfg.data.image_size},
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "meaning": "logits; apply softmax for probabilities"},
        "checkpoint": str(loaded.checkpoint_path),
        "epoch": loaded.epoch,
        "emorec_version": __version__,
    }


def _manifest_images(run_dir: Path, count: int) -> list[Path]:
    manifest = run_dir / "manifest.csv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: {"test": 0, "val": 1}.get(r.get("split") or "", 2))
    return [Path(r["path"]) for r in rows if Path(r["path"]).is_file()][: count * 2]


def synthetic_images(count: int = 4, seed: int = 0) -> list:
    """Seeded noise photos of awkward shapes (landscape, portrait, smaller than most crops), for
    checking preprocessing when no real image can be read."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = [(97, 61), (50, 130), (333, 257), (20, 25)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in (shapes * count)[:count]]


def preprocess_difference(transform, preprocessing: Preprocessing, images: list) -> float:
    """Max |PIL + numpy preprocessing - torchvision transform| over `images`, normalised units."""
    return max(float(np.abs(preprocessing(image) - transform(image).numpy()).max()) for image in images)


def parity_batch(loaded, run_dir: Path | None, preprocessing: Preprocessing, count: int = PARITY_IMAGES) -> tuple[np.ndarray, str, float]:
    """(batch, description, max |numpy - torchvision| input difference) for the parity check.

    Real images from the run's manifest; random inputs only when none can be read (stated in the
    description so the report never claims more than was checked), and then the preprocessing is
    compared on synthetic images instead.
    """
    from emorec.data.imageio import load_rgb

    images = []
    for path in _manifest_images(run_dir, count) if run_dir else []:
        try:
            images.append(load_rgb(path, min_size=max(preprocessing.resize)))
        except EmorecError:
            continue
        if len(images) == count:
            break
    if len(images) >= 2:
        diff = preprocess_difference(loaded.transform, preprocessing, images)
        return np.stack([preprocessing(image) for image in images]), f"{len(images)} real images", diff
    diff = preprocess_difference(loaded.transform, preprocessing, synthetic_images())
    size = preprocessing.crop
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (count, 3, *size)).astype(np.float32), f"{count} random inputs (no readable images in the run manifest)", diff


def _check(name: str, diff: float, tolerance: float, output_dir: Path) -> None:
    if not np.isfinite(diff) or diff > tolerance:
        raise EmorecError(
            f"{name} export differs from PyTorch by {diff:.3g} (> {tolerance:g}) in the logits, so nothing was written "
            f"to {output_dir}; the exported model is not trustworthy, report the backbone this happened with"
        )


def _torch_logits(model, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(batch)).float().numpy()


def export_onnx(loaded, path: Path, batch: np.ndarray, metadata: dict, opset: int = ONNX_OPSET) -> float:
    """Write `path` (ONNX, dynamic batch, metadata inside) and return the max logit difference
    between onnxruntime and PyTorch on `batch` (and on its first image alone)."""
    import onnx
    import torch

    from emorec.serving.onnx_runtime import OnnxClassifier
    from emorec.serving.static_pads import fold_static_pads

    model = loaded.model.cpu().eval()
    example = torch.from_numpy(batch[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation on every call
        try:
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; the user needs one line
            # Seen with ViTs run at a size other than their native one: timm then resamples the
            # position embedding with antialiased bicubic interpolation, which ONNX cannot express.
            raise EmorecError(
                f"ONNX export of {loaded.cfg.model.backbone} failed ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "use --format torchscript, or train at the backbone's native image size"
            ) from e
    proto = onnx.load(str(path))
    fold_static_pads(proto)  # TF 'same' padding as constants: ONNX Runtime then fuses each Pad into its Conv
    onnx.checker.check_model(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))

    runtime = OnnxClassifier(path)
    reference = _torch_logits(model, batch)
    return max(float(np.abs(runtime.logits(batch) - reference).max()), float(np.abs(runtime.logits(batch[:1]) - reference[:1]).max()))


def export_torchscript(loaded, path: Path, batch: np.ndarray, metadata: dict) -> float:
    """Write `path` (traced TorchScript, metadata as extra file) and return the max logit
    difference between the reloaded file and PyTorch."""
    import torch

    model = loaded.model.cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit.trace is marked deprecated but still supported
        try:
            traced = torch.jit.trace(model, torch.from_numpy(batch[:2]))
        except Exception as e:  # noqa: BLE001 - tracing raises many types; the user needs one line
            raise EmorecError(
                f"TorchScript tracing of {loaded.cfg.model.backbone} failed ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "use --format onnx"
            ) from e
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})
        reloaded = torch.jit.load(str(path), map_location="cpu")
    reference = _torch_logits(model, batch)
    return max(float(np.abs(_torch_logits(reloaded, batch) - reference).max()), float(np.abs(_torch_logits(reloaded, batch[:1]) - reference[:1]).max()))


EXPORTERS = {"onnx": ("ONNX", export_onnx), "torchscript": ("TorchScript", export_torchscript)}


def export_run(run_dir: str | Path, formats: tuple[str, ...] = ("onnx",), output_dir: str | Path | None = None,
               tolerance: float = PARITY_TOLERANCE, preprocess_tolerance: float = PREPROCESS_TOLERANCE,
               quantize: str | None = None) -> list[ExportResult]:
    """Export a run, checkpoint or built-in model to each of `formats` under `output_dir` (default
    RUN_DIR/export; for a built-in model a folder in the user's cache, `serving.backend.export_dir_of`).

    All or nothing: the files appear (with model.json) only when every format passed its checks.
    `quantize="int8"` then adds model.int8.onnx (`serving.quantize`), written only when it agrees
    with the fp32 model on the run's val split.
    """
    from emorec.run_model import load_run_model

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise EmorecError(f"unknown export format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)} or all")
    if quantize not in (None, "int8"):
        raise EmorecError(f"unknown --quantize {quantize}; the one choice is int8")
    if quantize and "onnx" not in formats:
        raise EmorecError("--quantize int8 quantizes the ONNX model: add --format onnx (or all)")
    from emorec.serving.backend import export_dir_of
    from emorec.zoo.registry import resolve_model

    run_dir = resolve_model(run_dir)
    loaded = load_run_model(run_dir, "cpu")
    checkpoint_dir = loaded.checkpoint_path.resolve().parent
    home = run_dir if run_dir.is_dir() else checkpoint_dir.parent if checkpoint_dir.name == "checkpoints" else checkpoint_dir
    output_dir = Path(output_dir) if output_dir else export_dir_of(run_dir)
    preprocessing = Preprocessing.from_transform(loaded.transform, loaded.mean, loaded.std)
    batch, described, preprocess_diff = parity_batch(loaded, home, preprocessing)
    if not preprocess_diff <= preprocess_tolerance:
        raise EmorecError(
            f"the PIL + numpy preprocessing of ONNX serving differs from the run's torchvision eval transform by "
            f"{preprocess_diff:.3g} (> {preprocess_tolerance:.3g}) on {described}, so nothing was exported; "
            "the eval transform must be Resize + CenterCrop + ToTensor + Normalize (data.transforms.build_eval_transform)"
        )
    metadata = export_metadata(loaded, preprocessing)
    output_dir.mkdir(parents=True, exist_ok=True)
    extra = {"preprocess_max_abs_diff": preprocess_diff}
    staged: list[tuple[Path, Path]] = []  # (temporary, final)
    try:
        results = []
        for fmt in (f for f in FORMATS if f in formats):
            name, exporter = EXPORTERS[fmt]
            final = output_dir / FILE_NAMES[fmt]
            temporary = _temporary(final)
            staged.append((temporary, final))
            diff = exporter(loaded, temporary, batch, metadata)
            _check(name, diff, tolerance, output_dir)
            results.append(ExportResult(fmt, final, diff, described, extra))
        info = _temporary(output_dir / "model.json")
        staged.append((info, output_dir / "model.json"))
        info.write_text(json.dumps(metadata, indent=2) + "\n")
        if "onnx" in formats:
            from emorec.serving.quantize import INT8_FILE_NAME

            # An INT8 model of the previous weights must not outlive them (predict and serve prefer it).
            (output_dir / INT8_FILE_NAME).unlink(missing_ok=True)
        for temporary, final in staged:
            os.replace(temporary, final)
        staged = []
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
    if quantize:
        results.append(_quantized(output_dir / FILE_NAMES["onnx"], home))
    return results


def _quantized(fp32_path: Path, run_home: Path) -> ExportResult:
    from emorec.serving.quantize import quantize_run

    path, figures = quantize_run(fp32_path, run_home)
    note = (f"top-1 agreement with fp32 {figures['top1_agreement']:.1%} and macro-F1 {100 * figures['macro_f1_int8']:.1f} "
            f"vs {100 * figures['macro_f1_fp32']:.1f} on {figures['images']} val images "
            f"(calibrated on {figures['calibration_images']} train images)")
    return ExportResult("onnx-int8", path, float("nan"), f"{figures['images']} val images", figures, note)


def _temporary(final: Path) -> Path:
    """A hidden name beside `final` (same folder, so the rename is atomic)."""
    return final.with_name(f".{final.name}.tmp{os.getpid()}")
