"""Cross-validated scores of linear probes, their ensembles, and the refit on train + val.

Why: one validation split of a small dataset cannot rank dozens of candidates. On Emotion6 (191
val images) the search's first version chose a head at 0.645 val macro-F1 that scored 49.3 on
the fold's test images, below the plain probe's 51.9: with a standard error of ~3.6 points per
score, the top of a long leaderboard is mostly luck, and heads that stop early on the same split
are flattered further. K-fold cross-validation over train + val scores a probe on every one of
those images (1,458 instead of 191), which is cheap for a logistic regression on cached vectors.
The chosen probe is then refit on train + val, as AutoGluon's `refit_full` and scikit-learn's
`GridSearchCV(refit=True)` do.

Every split has the centre view and its mirror image (the cache's first two views), so the folds
and the refit use those two views of every image; a fold is scored on its centre views only.
"""

from __future__ import annotations

import numpy as np

from emorec.errors import EmorecError
from emorec.fit.probe import Probe, fit_probe_arrays

FOLDS = 5
VIEWS = 2  # centre + horizontal flip: the views every split of a cache holds


def train_val_views(cache) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (N, 2, D) float32, targets (N,)) of the train then val images of `cache`."""
    import torch

    from emorec.training.sources import load_split

    parts = [load_split(cache, split, torch.device("cpu")) for split in ("train", "val")]
    x = np.concatenate([p[0][:, :VIEWS].numpy() for p in parts])
    y = np.concatenate([p[1].numpy() for p in parts])
    return x, y


def fold_count(class_counts: dict[str, int], k: int = FOLDS) -> tuple[int, str]:
    """The folds a cross-validation over train + val can have, given each class's train + val
    images: `k`, or as many as the smallest class has images (stratified folds hold at least one
    image of each class), with a one-line note saying so; below two, an error naming the minimum."""
    short = {name: n for name, n in sorted(class_counts.items()) if n < k}
    if not short:
        return k, ""
    smallest = min(short.values())
    listed = ", ".join(f"{name} ({n})" for name, n in short.items())
    if smallest < 2:
        raise EmorecError(f"cross-validation of the linear probes needs at least 2 train + val images of every class; "
                          f"{listed} {'has' if len(short) == 1 else 'have'} fewer: add images of "
                          f"{'that class' if len(short) == 1 else 'those classes'}, or leave logreg out of --heads")
    return smallest, (f"cross-validation: {smallest} folds instead of {k}: class {listed} "
                      f"{'has' if len(short) == 1 else 'have'} fewer than {k} train + val images "
                      "(a fold holds at least one image of each class)")


def folds(targets: np.ndarray, k: int = FOLDS, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds; the same targets and seed give the same folds, so the out-of-fold logits
    of different backbones (same images, same order) can be added up."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(targets).min()) if len(targets) else 0
    k = max(2, min(k, smallest))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(targets)), targets))


def out_of_fold_logits(x: np.ndarray, y: np.ndarray, C: float, num_classes: int, seed: int = 0,
                       k: int = FOLDS) -> np.ndarray:
    """(N, num_classes) logits of each image's centre view from the probe fit without its fold."""
    logits = np.zeros((len(y), num_classes), dtype=np.float32)
    for train, held in folds(y, k, seed):
        probe = fit_probe_arrays(x[train], y[train], C, num_classes, seed=seed)
        logits[held] = probe.logits(x[held, 0])
    return logits


def ensemble_probe(probes: list[Probe], plan: list[tuple[int, list[int]]]) -> Probe:
    """One linear map on the members' vectors side by side (`plan`: the group's column layout,
    `models/backbone_group.group_columns`) whose logits are the mean of the members' logits. The
    mean of logits ranks classes like the geometric mean of the members' probabilities (the
    softmax normaliser is the same for every class), so the ensemble is a plain linear head of the
    backbone group: evaluate, predict and export read it like any probe."""
    width = sum(len(columns) for _, columns in plan)
    weight = np.zeros((probes[0].weight.shape[0], width), dtype=np.float32)
    start = 0
    for member, columns in plan:
        weight[:, start:start + len(columns)] = probes[member].weight[:, columns] / len(probes)
        start += len(columns)
    bias = np.mean([p.bias for p in probes], axis=0).astype(np.float32)
    return Probe(weight, bias, C=float("nan"), iterations=max(p.iterations for p in probes),
                 seconds=sum(p.seconds for p in probes))
