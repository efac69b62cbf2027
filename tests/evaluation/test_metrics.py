"""Metrics agree with scikit-learn and with hand-computed calibration on known arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report, f1_score

from emorec.evaluation.metrics import (
    compute_metrics,
    expected_calibration_error,
    most_confused_pairs,
    reliability_bins,
    softmax,
    top_k_accuracy,
)

NAMES = ["anger", "awe", "fear", "joy"]


def _random_predictions(n=200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), targets] += 1.0  # better than chance, not perfect
    return softmax(logits), targets


def test_summary_metrics_match_sklearn():
    probs, targets = _random_predictions()
    preds = probs.argmax(1)
    m = compute_metrics(probs, targets, NAMES)
    assert m["num_samples"] == 200
    assert m["accuracy"] == pytest.approx(accuracy_score(targets, preds))
    assert m["macro_f1"] == pytest.approx(f1_score(targets, preds, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(targets, preds, average="weighted"))
    report = classification_report(targets, preds, target_names=NAMES, output_dict=True)
    for name in NAMES:
        assert m["per_class"][name]["precision"] == pytest.approx(report[name]["precision"])
        assert m["per_class"][name]["recall"] == pytest.approx(report[name]["recall"])
        assert m["per_class"][name]["f1"] == pytest.approx(report[name]["f1-score"])
        assert m["per_class"][name]["support"] == report[name]["support"]
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == 200 and np.trace(cm) == (preds == targets).sum()


def test_top2_counts_the_second_guess():
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    targets = np.array([0, 1, 2, 0])
    assert top_k_accuracy(probs, targets, 1) == pytest.approx(0.25)
    assert top_k_accuracy(probs, targets, 2) == pytest.approx(0.5)
    assert top_k_accuracy(probs, targets, 3) == 1.0


def test_ece_by_hand():
    # Two bins used: confidence 0.95 (2 samples, 1 right) and 0.55 (2 samples, both right).
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    targets = np.array([0, 1, 0, 1])
    expected = (2 * abs(0.5 - 0.95) + 2 * abs(1.0 - 0.55)) / 4
    assert expected_calibration_error(probs, targets, n_bins=10) == pytest.approx(expected)
    bins = reliability_bins(probs, targets, n_bins=10)
    assert bins.counts.sum() == 4 and bins.counts[9] == 2 and bins.counts[5] == 2


def test_ece_is_zero_when_confidence_equals_accuracy():
    # 10 samples at confidence 0.8, 8 of them right.
    probs = np.tile([0.8, 0.2], (10, 1))
    targets = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0, abs=1e-12)


def test_absent_classes_get_a_row_but_do_not_lower_macro_f1():
    probs = np.array([[0.9, 0.1, 0.0, 0.0], [0.1, 0.9, 0.0, 0.0]])
    m = compute_metrics(probs, np.array([0, 1]), NAMES)
    assert m["macro_f1"] == pytest.approx(1.0)
    assert m["per_class"]["joy"]["support"] == 0


def test_most_confused_pairs_orders_off_diagonal_cells():
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 6, 2]])
    pairs = most_confused_pairs(cm, ["a", "b", "c"], top=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "b", 6), ("a", "b", 3)]
    assert pairs[0]["share"] == pytest.approx(0.75)
