"""The model behind `emorec serve`: one small adapter over the existing predictors.

The server needs inference split in two: `prepare` (PIL image -> normalised array, run in the
request's thread, in parallel) and `forward` (a stacked batch -> probabilities, run by the
micro-batcher, one batch at a time). `predict_images` joins them, which is also the predictor
interface the face pipeline expects (`emorec.faces.predict.predict_faces`).

Backends: "onnx" (the default; onnxruntime, PIL + numpy, no torch import) and "torch" (the run's
PyTorch model; needed for Grad-CAM explanations). This module is the only place the server
touches the rest of emorec's serving code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emorec.errors import EmorecError

BACKENDS = ("onnx", "torch")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


class OnnxBackend:
    """An exported .onnx file run by onnxruntime."""

    name = "onnx"
    can_explain = False

    def __init__(self, path: str | Path, threads: int = 0):
        from emorec.serving.onnx_runtime import OnnxClassifier

        self.path = Path(path)
        self.model = OnnxClassifier(self.path, threads=threads)
        self.labels: list[str] = list(self.model.labels)
        # JPEGs may be decoded at reduced scale (draft mode), but never below the Resize target.
        self.min_size = max(self.model.preprocessing.resize)
        self.precision = "int8" if "int8_check" in self.model.metadata else "fp32"
        from emorec.serving.quantize import describe

        self.description = f"{self.path}: ONNX Runtime, {describe(self.model)}"

    def prepare(self, image) -> np.ndarray:
        return self.model.preprocessing(image)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return softmax(self.model.logits(batch))

    def predict_images(self, images: list) -> np.ndarray:
        return self.forward(np.stack([self.prepare(im) for im in images]))


class TorchBackend:
    """A run directory or checkpoint, run by PyTorch; the one backend that can explain."""

    name = "torch"
    can_explain = True

    def __init__(self, path: str | Path, device: str = "cpu"):
        from emorec.serving.predict import TorchPredictor

        self.path = Path(path)
        self.predictor = TorchPredictor(self.path, device)
        self.labels: list[str] = list(self.predictor.labels)
        self.min_size = self.predictor.min_size
        self.precision, self.description = "fp32", self.predictor.description

    def prepare(self, image) -> np.ndarray:
        return self.predictor.loaded.transform(image).numpy()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.predictor.loaded.model(torch.from_numpy(batch).to(self.predictor.device))
        return softmax(logits.float().cpu().numpy())

    def predict_images(self, images: list) -> np.ndarray:
        return self.forward(np.stack([self.prepare(im) for im in images]))

    def explain(self, image, target: int | None = None):
        """(overlay PIL image at the photo's size, explained label index). Needs emorec.explain."""
        from emorec.explain.gradcam import gradcam_map, overlay

        loaded = self.predictor.loaded
        heat, index = gradcam_map(loaded.model, image, loaded.transform, target)
        return overlay(image, heat), int(index)


def export_dir_of(path: Path) -> Path:
    """RUN_DIR/export for a run directory or one of its checkpoints; for a built-in model a folder
    in the user's cache, since the installed package may be read-only."""
    from emorec.zoo.registry import builtin_of, derived_dir

    path = Path(path)
    if (builtin := builtin_of(path)) is not None:
        return derived_dir(builtin) / "export"
    home = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return home / "export"


def int8_model_of(model: str | Path) -> Path | None:
    """RUN_DIR/export/model.int8.onnx when the run (directory or checkpoint) has one; `emorec export
    --quantize int8` writes it only after it agreed with the fp32 model on the val split."""
    from emorec.serving.quantize import INT8_FILE_NAME

    from emorec.zoo.registry import resolve_model

    path = Path(model)
    if path.suffix.lower() == ".onnx":
        return None
    path = resolve_model(path)
    if not path.exists():
        return None
    candidate = export_dir_of(path) / INT8_FILE_NAME
    return candidate if candidate.is_file() else None


def onnx_path_for(model: str | Path, export_missing: bool = True, int8: bool = True) -> Path:
    """The .onnx file to serve for MODEL: itself, or RUN_DIR/export/model.int8.onnx when the run has
    one (and `int8`), else RUN_DIR/export/model.onnx (exported when missing).

    Exporting writes exactly what `emorec export RUN_DIR` would, so serving a run the first time
    needs torch once; afterwards the .onnx file alone is served.
    """
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise EmorecError(f"ONNX model not found: {path}; export one with `emorec export RUN_DIR`")
        return path
    from emorec.zoo.registry import resolve_model

    path = resolve_model(path)
    if not path.exists():
        raise EmorecError(f"model not found: {path}; pass a run directory, a .pt checkpoint, an exported .onnx file or "
                          "a built-in model's name (`emorec models`)")
    if int8 and (quantized := int8_model_of(path)) is not None:
        return quantized
    exported = export_dir_of(path) / "model.onnx"
    if exported.is_file():
        return exported
    if not export_missing:
        raise EmorecError(f"{path} has no exported model ({exported}); run `emorec export {path}` or serve with --backend torch")
    from emorec.serving.export import export_run

    results = export_run(path, ("onnx",))
    return results[0].path


def open_backend(model: str | Path, backend: str = "onnx", device: str = "cpu", threads: int = 0, int8: bool = True):
    """OnnxBackend or TorchBackend for a run directory, checkpoint or .onnx file (the onnx backend
    runs a run's INT8 model when it has one, unless `int8` is False)."""
    if backend not in BACKENDS:
        raise EmorecError(f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}")
    if backend == "onnx":
        return OnnxBackend(onnx_path_for(model, int8=int8), threads=threads)
    if Path(model).suffix.lower() == ".onnx":
        raise EmorecError(f"{model} is an ONNX file; the torch backend needs a run directory or .pt checkpoint (or use --backend onnx)")
    return TorchBackend(model, device)
