"""Metrics on small arrays whose every number is worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from emorec.evaluation.metrics import (
    compute_metrics,
    expected_calibration_error,
    most_confused_pairs,
    reliability_bins,
    top_k_accuracy,
)
from emorec.training.validation import macro_f1

# -- three classes, eight samples, every class both true and predicted ---------------------------
#
#  sample  true  probabilities (a, b, c)  predicted  confidence  right  true class in top 2
#    0      a    0.90 0.05 0.05             a          0.90        yes    yes
#    1      a    0.70 0.20 0.10             a          0.70        yes    yes
#    2      a    0.30 0.50 0.20             b          0.50        no     yes (a is second)
#    3      a    0.10 0.20 0.70             c          0.70        no     no  (c, b)
#    4      b    0.05 0.90 0.05             b          0.90        yes    yes
#    5      b    0.20 0.50 0.30             b          0.50        yes    yes
#    6      b    0.50 0.30 0.20             a          0.50        no     yes (b is second)
#    7      c    0.10 0.05 0.85             c          0.85        yes    yes
#
#  confusion (rows true, columns predicted)   a  b  c | row total
#                                          a  2  1  1 | 4
#                                          b  1  2  0 | 3
#                                          c  0  0  1 | 1
#                                  column     3  3  2
THREE = ["a", "b", "c"]
THREE_PROBS = np.array([
    [0.90, 0.05, 0.05], [0.70, 0.20, 0.10], [0.30, 0.50, 0.20], [0.10, 0.20, 0.70],
    [0.05, 0.90, 0.05], [0.20, 0.50, 0.30], [0.50, 0.30, 0.20], [0.10, 0.05, 0.85],
])
THREE_TARGETS = np.array([0, 0, 0, 0, 1, 1, 1, 2])


def test_three_classes_eight_samples_by_hand():
    m = compute_metrics(THREE_PROBS, THREE_TARGETS, THREE, n_bins=5)
    assert m["num_samples"] == 8
    assert m["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(5 / 8)  # the diagonal, 2 + 2 + 1
    assert m["top2_accuracy"] == pytest.approx(7 / 8)  # all but sample 3
    # precision = diagonal / column, recall = diagonal / row, F1 = 2PR / (P + R):
    #   a: P 2/3, R 2/4 -> F1 2 * (1/3) / (7/6) = 4/7
    #   b: P 2/3, R 2/3 -> F1 2/3
    #   c: P 1/2, R 1/1 -> F1 2 * (1/2) / (3/2) = 2/3
    assert m["per_class"] == {
        "a": {"precision": pytest.approx(2 / 3), "recall": pytest.approx(1 / 2), "f1": pytest.approx(4 / 7), "support": 4},
        "b": {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3), "support": 3},
        "c": {"precision": pytest.approx(1 / 2), "recall": pytest.approx(1.0), "f1": pytest.approx(2 / 3), "support": 1},
    }
    # macro: (4/7 + 2/3 + 2/3) / 3 = (12 + 14 + 14) / 63 = 40/63 ~ 0.635
    assert m["macro_f1"] == pytest.approx(40 / 63)
    # weighted by support: (4 * 4/7 + 3 * 2/3 + 1 * 2/3) / 8 = (16/7 + 8/3) / 8 = (104/21) / 8 = 13/21 ~ 0.619
    assert m["weighted_f1"] == pytest.approx(13 / 21)
    # Five bins of width 0.2, (lo, hi]:
    #   (0.4, 0.6]: samples 2, 5, 6 -> confidence 0.5, accuracy 1/3, gap 1/6, weight 3 -> 0.5
    #   (0.6, 0.8]: samples 1, 3    -> confidence 0.7, accuracy 1/2, gap 0.2, weight 2 -> 0.4
    #   (0.8, 1.0]: samples 0, 4, 7 -> confidence 2.65/3, accuracy 1, gap 0.35/3, weight 3 -> 0.35
    #   ECE = (0.5 + 0.4 + 0.35) / 8 = 0.15625
    assert m["ece"] == pytest.approx(0.15625)
    assert m["ece_bins"] == 5
    # Every off-diagonal cell is 1 (a tie, so compared as a set); share = cell / row total.
    assert sorted((p["true"], p["predicted"], p["count"], p["share"]) for p in m["most_confused"]) == [
        ("a", "b", 1, pytest.approx(1 / 4)), ("a", "c", 1, pytest.approx(1 / 4)), ("b", "a", 1, pytest.approx(1 / 3)),
    ]


def test_reliability_bins_by_hand():
    bins = reliability_bins(THREE_PROBS, THREE_TARGETS, n_bins=5)  # the bins worked out above
    assert bins.edges == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins.counts.tolist() == [0, 0, 3, 2, 3]
    assert bins.confidence == pytest.approx([0.0, 0.0, 0.5, 0.7, 2.65 / 3])
    assert bins.accuracy == pytest.approx([0.0, 0.0, 1 / 3, 1 / 2, 1.0])


def test_a_confidence_on_an_edge_falls_in_the_bin_below():
    # Bins are (lo, hi]; edges 0, 0.25, 0.5, 0.75, 1 are exact in binary, so 0.5 -> bin 1,
    # 0.75 -> bin 2 and 1.0 -> bin 3 (not past the end).
    probs = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    assert reliability_bins(probs, np.array([0, 0, 0]), n_bins=4).counts.tolist() == [0, 1, 1, 1]


# -- four names: one never predicted, one never true, one in neither ------------------------------
#
#  true    a a a a b b b b
#  pred    a a a c a a c c     (every prediction at confidence 0.7)
#
#  confusion   a  b  c  d | row total
#          a   3  0  1  0 | 4
#          b   2  0  2  0 | 4
#          c   0  0  0  0 | 0      c is predicted 3 times, never true
#          d   0  0  0  0 | 0      d is neither
#  column      5  0  3  0          b is never predicted
FOUR = ["a", "b", "c", "d"]
FOUR_TARGETS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
FOUR_PREDS = np.array([0, 0, 0, 2, 0, 0, 2, 2])


def _probs_predicting(preds: np.ndarray, num_classes: int, confidence: float = 0.7) -> np.ndarray:
    probs = np.full((len(preds), num_classes), (1 - confidence) / (num_classes - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_absent_classes_by_hand():
    m = compute_metrics(_probs_predicting(FOUR_PREDS, 4), FOUR_TARGETS, FOUR)
    assert m["confusion_matrix"] == [[3, 0, 1, 0], [2, 0, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(3 / 8)
    # a: P 3/5, R 3/4 -> F1 2 * (9/20) / (27/20) = 2/3
    # b: never predicted, so precision is 0/0, reported as 0; recall 0/4; F1 0
    # c: predicted 3 times, never right (precision 0/3); recall 0/0, reported as 0; support 0
    # d: a row of zeros, so reports from datasets lacking a class still line up
    assert m["per_class"] == {
        "a": {"precision": pytest.approx(3 / 5), "recall": pytest.approx(3 / 4), "f1": pytest.approx(2 / 3), "support": 4},
        "b": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 4},
        "c": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        "d": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
    }
    # Macro over the classes that occur as truth or prediction (a, b, c; d in neither is left
    # out): (2/3 + 0 + 0) / 3 = 2/9. Weighted by support: (4 * 2/3 + 4 * 0 + 0 * 0) / 8 = 1/3.
    assert m["macro_f1"] == pytest.approx(2 / 9)
    assert m["weighted_f1"] == pytest.approx(1 / 3)
    # All eight in one bin: |accuracy 3/8 - confidence 0.7| = 0.325.
    assert m["ece"] == pytest.approx(0.325)
    # Off-diagonal cells: b->a 2 of 4, b->c 2 of 4 (a tie), a->c 1 of 4.
    assert sorted((p["true"], p["predicted"], p["count"], p["share"]) for p in m["most_confused"]) == [
        ("a", "c", 1, pytest.approx(1 / 4)), ("b", "a", 2, pytest.approx(1 / 2)), ("b", "c", 2, pytest.approx(1 / 2)),
    ]


def test_training_macro_f1_counts_every_label_of_the_map():
    # The per-epoch figure divides by all four labels, so it is comparable from epoch to epoch
    # whatever a batch of predictions happens to contain: (2/3 + 0 + 0 + 0) / 4 = 1/6.
    assert macro_f1(FOUR_TARGETS, FOUR_PREDS, 4) == pytest.approx(1 / 6)
    # Three classes, eight samples above: the same 40/63 as compute_metrics, every class occurs.
    assert macro_f1(THREE_TARGETS, THREE_PROBS.argmax(1), 3) == pytest.approx(40 / 63)


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


def test_most_confused_pairs_orders_off_diagonal_cells():
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 6, 2]])
    pairs = most_confused_pairs(cm, ["a", "b", "c"], top=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "b", 6), ("a", "b", 3)]
    assert pairs[0]["share"] == pytest.approx(0.75)
