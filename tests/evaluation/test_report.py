"""report.md and metrics.json are rendered from the same numbers; findings name the weak spots."""

from __future__ import annotations

import json

import numpy as np

from emorec.evaluation.metrics import compute_metrics
from emorec.evaluation.report import findings, write_report

NAMES = ["anger", "awe", "fear"]


def _metrics():
    # anger perfect, awe half right (confused with fear), fear always right.
    targets = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    preds = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    probs = np.full((8, 3), 0.1)
    probs[np.arange(8), preds] = 0.8
    return compute_metrics(probs, targets, NAMES)


def test_findings_name_the_weakest_class_and_the_confused_pair():
    m = _metrics()
    notes = findings(m, None, weakest=1)
    assert notes[0].startswith("Weakest classes: awe (F1 0.67")
    assert "awe taken for fear 2 times (50% of awe)" in notes[1]


def test_markdown_and_json_hold_the_same_numbers(tmp_path):
    m = _metrics()
    results = {
        "name": "run on test", "run_dir": "runs/x", "checkpoint": "runs/x/checkpoints/best.pt", "created": "now",
        "data": {"description": "split 'test'", "num_images": 8, "skipped": 0, "split_sizes": {"test": 8}},
        "model": {"backbone": "resnet18", "parameters": 11_000_000},
        "training": {"best_epoch": 4, "wall_time_s": 123.456},
        "tta": {"enabled": True, "hflip": True, "crops": 0, "views": 2},
        "metrics": m, "metrics_tta": m, "findings": findings(m, m), "pictures": {"confusion_matrix": "confusion_matrix.png"},
    }
    json_path, md_path = write_report(results, tmp_path)
    assert json.loads(json_path.read_text())["metrics"]["accuracy"] == m["accuracy"] == 0.75
    md = md_path.read_text()
    assert "| accuracy | 0.7500 | 0.7500 |" in md
    assert "| parameters | 11,000,000 |" in md and "| wall_time_s | 123.5 |" in md
    assert "| awe | 1.0000 | 0.5000 | 0.6667 | 4 | 0.6667 |" in md
    assert "TTA changes accuracy by +0.0 points" in md
    assert "![Confusion matrix](confusion_matrix.png)" in md
