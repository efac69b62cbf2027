"""Every picture is written as a valid PNG of a readable size."""

from __future__ import annotations

import numpy as np
from PIL import Image

from emorec.evaluation import plots
from emorec.evaluation.metrics import compute_metrics, reliability_bins, softmax

NAMES = ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]


def _assert_png(path, min_side=200):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_side and im.height >= min_side, im.size


def _predictions(n=120, k=len(NAMES)):
    rng = np.random.default_rng(1)
    targets = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), targets] += 1.5
    return softmax(logits), targets


def _metrics_rows(epochs=5):
    return [
        {"epoch": str(e), "lr": str(1e-3 * (e + 1) / epochs), "train_loss": str(2 - 0.2 * e), "val_loss": str(2.1 - 0.15 * e),
         "train_accuracy": str(0.2 + 0.1 * e), "val_accuracy": str(0.2 + 0.08 * e), "val_macro_f1": str(0.15 + 0.08 * e)}
        for e in range(1, epochs + 1)
    ]


def test_all_pictures_are_valid_pngs(tmp_path):
    probs, targets = _predictions()
    m = compute_metrics(probs, targets, NAMES)
    _assert_png(plots.plot_confusion_matrix(np.array(m["confusion_matrix"]), NAMES, tmp_path / "cm.png"))
    _assert_png(plots.plot_training_curves(_metrics_rows(), tmp_path / "curves.png"))
    _assert_png(plots.plot_lr_schedule(_metrics_rows(), tmp_path / "lr.png"))
    _assert_png(plots.plot_reliability_diagram(reliability_bins(probs, targets), tmp_path / "rel.png", ece=m["ece"]))
    _assert_png(plots.plot_per_class_f1(m["per_class"], tmp_path / "f1.png", compare=m["per_class"]))
    thumbs = [
        {"image": np.full((40, 40, 3), 30 * i, np.uint8), "true": NAMES[i], "predicted": NAMES[-1 - i], "confidence": 0.9}
        for i in range(6)
    ]
    _assert_png(plots.plot_mistakes(thumbs, tmp_path / "mistakes.png"))


def test_empty_inputs_still_draw(tmp_path):
    _assert_png(plots.plot_mistakes([], tmp_path / "none.png"))
    _assert_png(plots.plot_training_curves([{"epoch": "1", "lr": "", "train_loss": "nan"}], tmp_path / "c.png"))
