"""Classification metrics from predicted probabilities: accuracy, F1, top-k, calibration.

Everything takes plain numpy arrays (`probs` of shape (N, K), `targets` of shape (N,)) so the same
functions serve the evaluator, the notebook and the tests. Per-class numbers come straight from
scikit-learn's `classification_report` rather than being re-derived here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    top_k_accuracy_score,
)

# Equal-width confidence bins for ECE. 15 is the count used by Guo et al., "On Calibration of
# Modern Neural Networks" (ICML 2017), so our numbers are comparable with the literature.
ECE_BINS = 15


@dataclass
class ReliabilityBins:
    """Per-bin statistics behind the ECE and the reliability diagram (empty bins hold 0)."""

    edges: np.ndarray  # (n_bins + 1,) from 0 to 1
    confidence: np.ndarray  # mean max-probability of the samples in each bin
    accuracy: np.ndarray  # fraction of those samples predicted correctly
    counts: np.ndarray  # samples per bin


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Group samples by their top-1 confidence into `n_bins` equal-width bins over [0, 1]."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lo, hi]; a confidence of exactly 0 cannot occur for a softmax over K >= 1 classes.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    safe = np.maximum(counts, 1)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    return ReliabilityBins(edges=edges, confidence=conf_sum / safe, accuracy=acc_sum / safe, counts=counts)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: the sample-weighted mean gap |accuracy - confidence| over equal-width bins."""
    bins = reliability_bins(probs, targets, n_bins)
    total = bins.counts.sum()
    if total == 0:
        return 0.0
    return float(np.sum(bins.counts * np.abs(bins.accuracy - bins.confidence)) / total)


def top_k_accuracy(probs: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the k most probable ones."""
    num_classes = probs.shape[1]
    if k >= num_classes:
        return 1.0
    return float(top_k_accuracy_score(targets, probs, k=k, labels=np.arange(num_classes)))


def most_confused_pairs(cm: np.ndarray, names: list[str], top: int = 3) -> list[dict]:
    """The largest off-diagonal cells of a confusion matrix: (true, predicted, count, row share)."""
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1]
    pairs = []
    for flat in order[:top]:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        row = cm[i].sum()
        pairs.append(
            {"true": names[i], "predicted": names[j], "count": int(off[i, j]), "share": float(off[i, j] / row) if row else 0.0}
        )
    return pairs


def compute_metrics(probs: np.ndarray, targets: np.ndarray, names: list[str], n_bins: int = ECE_BINS) -> dict:
    """All summary metrics for one set of predictions, as JSON-ready plain Python values.

    `names` are the label-map names in index order; classes absent from `targets` still get a
    row (support 0) so reports from different datasets line up.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    labels = np.arange(len(names))
    preds = probs.argmax(axis=1)
    report = classification_report(
        targets, preds, labels=labels, target_names=list(names), output_dict=True, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in names
    }
    cm = confusion_matrix(targets, preds, labels=labels)
    return {
        "num_samples": int(len(targets)),
        "accuracy": float(accuracy_score(targets, preds)),
        # Averages over the classes that occur (sklearn's default), so a dataset lacking a class
        # is not charged a zero F1 for it.
        "macro_f1": float(f1_score(targets, preds, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(targets, preds, average="weighted", zero_division=0)),
        "top2_accuracy": top_k_accuracy(probs, targets, 2),
        "ece": expected_calibration_error(probs, targets, n_bins),
        "ece_bins": n_bins,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused_pairs(cm, list(names)),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (numpy, for paths without torch)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
