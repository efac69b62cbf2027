"""Predict emotions for image files with a run, a checkpoint or an exported .onnx model.

Inputs are files, folders (searched recursively) or CSV manifests (a `path` column). Images are
decoded in a small thread pool (PIL releases the GIL while decoding) and run in batches.
An unreadable image becomes a `Failure` in the stream, never an exception, so one bad file does
not cost the results of the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from emorec.data.inputs import Failure, collect_inputs, load_or_failure
from emorec.data.views import TEN_CROP, TTA_MODES
from emorec.errors import EmorecError
from emorec.evaluation.metrics import softmax
from emorec.prediction_rows import Prediction

DECODE_THREADS = 4


def preprocessing_of(loaded) -> "Preprocessing":  # noqa: F821
    """The PIL + numpy description of a loaded run's eval transform."""
    from emorec.data.preprocess import Preprocessing

    return Preprocessing.from_transform(loaded.transform, loaded.mean, loaded.std)


class TorchPredictor:
    """A run directory or checkpoint, served with PyTorch."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        from emorec.devices import resolve_device
        from emorec.run_model import load_run_model

        self.device = resolve_device(device)
        self.loaded = load_run_model(path, self.device)
        self.labels = list(self.loaded.label_map.names)
        preprocessing = preprocessing_of(self.loaded)
        # JPEGs may be decoded at reduced scale (draft mode), but never below the Resize target.
        self.min_size = max(preprocessing.resize)
        self.crop_size = preprocessing.input_size
        self.description = f"{self.loaded.checkpoint_path}: PyTorch on {self.device}"

    def probabilities(self, images: list, tta: bool | str) -> np.ndarray:
        """(N, K) probabilities; `tta`: False, True (the run's eval.tta_mode) or a mode name."""
        import torch

        from emorec.data.transforms import ten_crop_input_transform
        from emorec.evaluation.tta import resolve_tta, tta_probabilities
        from emorec.inference import infer

        model, eval_cfg = self.loaded.model, self.loaded.cfg.eval
        mode = resolve_tta(tta, eval_cfg)
        transform = ten_crop_input_transform(self.loaded.transform) if mode == TEN_CROP else self.loaded.transform

        def forward(batch):
            if mode is None:
                return torch.softmax(model(batch).float(), dim=1)
            return tta_probabilities(model, batch, eval_cfg, mode, self.crop_size)

        batch = torch.stack([transform(im) for im in images])
        return infer(forward, batch, self.device).cpu().numpy()

    def predict_images(self, images: list, tta: bool = False) -> np.ndarray:
        """(N, K) probabilities for decoded RGB images (e.g. face crops)."""
        return self.probabilities(images, tta)


class OnnxPredictor:
    """An exported .onnx model, served with onnxruntime; preprocessing in PIL + numpy."""

    def __init__(self, path: str | Path):
        from emorec.serving.onnx_runtime import OnnxClassifier

        from emorec.serving.quantize import describe

        self.model = OnnxClassifier(path)
        self.description = f"{path}: ONNX Runtime, {describe(self.model)}"
        self.labels = self.model.labels
        self.min_size = max(self.model.preprocessing.resize)
        # exports before ten-crop existed carry no mode: theirs was "views"
        self.tta = {"hflip": True, "crops": 0, "mode": "views", **self.model.metadata.get("tta", {})}

    def probabilities(self, images: list, tta: bool | str) -> np.ndarray:
        """(N, K) probabilities; `tta`: False, True (the exported eval.tta_mode) or a mode name."""
        from emorec.data.preprocess import ten_crop_views_numpy, tta_views_numpy

        mode = self.tta["mode"] if tta is True else (tta or None)
        if mode not in (None, *TTA_MODES):
            raise EmorecError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
        preprocessing = self.model.preprocessing
        if mode == TEN_CROP:
            batch = np.stack([preprocessing.ten_crop_input()(im) for im in images])
            views = ten_crop_views_numpy(batch, preprocessing.input_size)
        else:
            batch = np.stack([preprocessing(im) for im in images])
            views = tta_views_numpy(batch, hflip=self.tta["hflip"], crops=self.tta["crops"]) if mode else [batch]
        return np.mean([softmax(self.model.logits(v).astype(np.float64)) for v in views], axis=0)

    def predict_images(self, images: list, tta: bool = False) -> np.ndarray:
        """(N, K) probabilities for decoded RGB images (e.g. face crops)."""
        return self.probabilities(images, tta)


def open_predictor(model: str | Path, device: str = "cpu", int8: bool = True):
    """OnnxPredictor for a .onnx file, or for a run whose RUN/export/model.int8.onnx exists (unless
    `int8` is False: `emorec export --quantize int8` checked it against fp32 on the val split);
    otherwise TorchPredictor for a run dir or .pt file (on `device`: auto, cpu, cuda, cuda:N).
    `.description` says which model runs."""
    from emorec.serving.backend import int8_model_of

    if Path(model).suffix.lower() == ".onnx":
        return OnnxPredictor(model)
    if int8 and (quantized := int8_model_of(model)) is not None:
        return OnnxPredictor(quantized)
    return TorchPredictor(model, device)


def predict_paths(predictor, paths: list[Path], top_k: int = 3, tta: bool | str = False, batch_size: int = 32) -> Iterator[Prediction | Failure]:
    """Yield one Prediction or Failure per path, in input order, batch by batch."""
    top_k = max(1, min(top_k, len(predictor.labels)))
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            loaded = list(pool.map(lambda p: load_or_failure(p, predictor.min_size), chunk))
            images = [im for im in loaded if not isinstance(im, Failure)]
            probs = predictor.probabilities(images, tta) if images else np.zeros((0, len(predictor.labels)))
            row = 0
            for path, item in zip(chunk, loaded):
                if isinstance(item, Failure):
                    yield item
                    continue
                order = np.argsort(-probs[row])[:top_k]
                yield Prediction(str(path), [(predictor.labels[i], float(probs[row, i])) for i in order])
                row += 1


def predict(model: str | Path, inputs: Iterable[str | Path], top_k: int = 3, tta: bool | str = False, batch_size: int = 32, device: str = "cpu") -> tuple[list[Prediction], list[Failure]]:
    """Library entry point: all predictions and failures for `inputs` as two lists."""
    paths, failures = collect_inputs(inputs)
    predictor = open_predictor(model, device)
    predictions = []
    for item in predict_paths(predictor, paths, top_k, tta, batch_size):
        (failures if isinstance(item, Failure) else predictions).append(item)
    return predictions, failures
