"""Score a built-in model the way its card says: the same images, the same code path as `emorec
predict` (decode, eval transform, optional TTA), so the card's figures are what a user gets.

Used twice: by `zoo.build` to write the card, and by the test that re-scores every shipped model
from `../shared` so a card cannot drift from its weights.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from emorec.data.inputs import Failure
from emorec.data.manifest import Manifest, Sample, read_manifest
from emorec.errors import EmorecError
from emorec.evaluation.metrics import compute_metrics
from emorec.zoo.recipes import Scoring

UNCOPIED = "uncopied:"  # Scoring.data prefix: the split without the images copied in train
SPLITS_FILE = "splits.csv"
BATCH = 64


def scoring_samples(scoring: Scoring, shared: Path, model_folder: Path, dataset_root: str = "") -> list[Sample]:
    """The samples a Scoring names, with paths that exist on this machine."""
    data = scoring.data
    uncopied = data.startswith(UNCOPIED)
    data = data.removeprefix(UNCOPIED)
    if data == SPLITS_FILE:
        root = Path(dataset_root.format(shared=shared))
        manifest = _shipped_split(model_folder / SPLITS_FILE, root)
    else:
        manifest = read_manifest(data.format(shared=shared))
    if uncopied:
        from emorec.data.leakage import samples_without_copies

        samples, _ = samples_without_copies(manifest, scoring.split, "train")
        return samples
    if scoring.split not in manifest.splits():
        raise EmorecError(f"split '{scoring.split}' is not in {data}")
    return manifest.subset(scoring.split).samples


def _shipped_split(path: Path, root: Path) -> Manifest:
    """splits.csv (paths relative to the dataset folder) read against `root`."""
    if not path.is_file():
        raise EmorecError(f"{path} is missing; reinstall emorec or rebuild the model with `emorec models build`")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [r["path"] for r in rows if not (root / r["path"]).is_file()]
    if missing:
        raise EmorecError(f"{len(missing)} images of {path} are not under {root} (e.g. {missing[0]}); pass the folder "
                          "that holds the dataset")
    return Manifest([Sample(str(root / r["path"]), r["label"], r["split"]) for r in rows], str(path))


def score(model_folder: Path, samples: list[Sample], tta: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """compute_metrics of the model on `samples` (one view, or `tta` as in `emorec predict --tta-mode`),
    plus how many images could not be read: `emorec predict`'s own `predict_paths`, all labels kept."""
    from emorec.serving.predict import TorchPredictor, predict_paths

    predictor = TorchPredictor(model_folder, device)
    index = {name: i for i, name in enumerate(predictor.labels)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise EmorecError(f"labels {unknown} are not the model's ({predictor.labels})")
    probs, targets, unreadable = [], [], 0
    items = predict_paths(predictor, [s.path for s in samples], len(index), tta or False, BATCH)
    for sample, item in zip(samples, items):
        if isinstance(item, Failure):
            unreadable += 1
            continue
        row = np.zeros(len(index))
        for label, p in item.top:
            row[index[label]] = p
        probs.append(row)
        targets.append(index[sample.label])
    metrics = compute_metrics(np.stack(probs), np.array(targets), predictor.labels)
    metrics["unreadable"] = unreadable
    return metrics


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """The card's view of compute_metrics: headline figures, per-class F1, calibration."""
    return {
        "images": metrics["num_samples"],
        "accuracy": round(metrics["accuracy"], 4),
        "macro_f1": round(metrics["macro_f1"], 4),
        "ece": round(metrics["ece"], 4),
        "per_class_f1": {name: round(m["f1"], 4) for name, m in metrics["per_class"].items()},
    }


def measure_speed(model_folder: Path, image_side: int, threads: int = 2, repeats: int = 15) -> dict[str, Any]:
    """Images/s of `emorec predict`'s PyTorch path (preprocessing included) at batch 1 and 16 on
    `threads` CPU threads, median of `repeats` after a warm-up, on random photos `image_side` px
    square."""
    import torch
    from PIL import Image

    from emorec.serving.predict import TorchPredictor

    torch.set_num_threads(threads)
    predictor = TorchPredictor(model_folder, "cpu")
    rng = np.random.default_rng(0)
    # The load on the machine while measuring: figures from a busy machine are low, and say so.
    out = {"threads": threads, "image_side": image_side, "load_average": round(os.getloadavg()[0], 1)}
    for batch in (1, 16):
        images = [Image.fromarray(rng.integers(0, 255, (image_side, image_side, 3), dtype=np.uint8)) for _ in range(batch)]
        predictor.probabilities(images, False)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.probabilities(images, False)
            times.append(time.perf_counter() - start)
        out[f"images_per_s_batch{batch}"] = round(batch / float(np.median(times)), 1)
    return out
