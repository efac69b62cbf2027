"""The linear probe as a candidate of the search, and as a normal run directory.

A well-regularised linear classifier on frozen features is the baseline to beat on small data
(Kornblith et al., "Do Better ImageNet Models Transfer Better?", CVPR 2019, use exactly this
protocol), and it is often the best model there. scikit-learn's `LogisticRegression` (L-BFGS,
multinomial, L2 strength `C`, class-balanced) fits it on standardised cached vectors of every
training view. The standardisation is then folded into the weights of the model's linear head,

    W' = W / sigma,   b' = b - W' mu,

so the run holds a plain `EmotionClassifier` (backbone + linear head, no scaler) that `evaluate`,
`predict` and `export` read like any other, and `emorec train --resume RUN --set train.epochs=N`
continues training that head with the trainer.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from emorec.config import Config
from emorec.training.sources import load_split

# Overrides that make a model's head the probe's: one linear layer on the pooled vector.
LINEAR_HEAD = ("model.attention=false", "model.hidden_dims=[]", "model.dropout=[]", "loss.name=ce",
               "loss.label_smoothing=0.0")


@dataclasses.dataclass
class Probe:
    weight: np.ndarray  # (K, D), standardisation folded in
    bias: np.ndarray  # (K,)
    C: float
    iterations: int
    seconds: float

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """(N, K) logits of raw (N, D) vectors."""
        return vectors @ self.weight.T + self.bias


def fit_logistic_regression(cache, C: float, max_iter: int = 1000, seed: int = 0) -> Probe:
    """LogisticRegression on the standardised vectors of every training view of `cache`, folded
    back into one linear map of the raw vectors."""
    vectors, targets, _ = load_split(cache, "train", torch.device("cpu"))
    return fit_probe_arrays(vectors.numpy(), targets.numpy(), C, len(cache.label_names), max_iter, seed)


def fit_probe_arrays(vectors: np.ndarray, targets: np.ndarray, C: float, num_classes: int, max_iter: int = 1000,
                     seed: int = 0) -> Probe:
    """The probe of (N, V, D) vectors: every view of a sample is a training row. A class absent
    from `targets` (a small fold) gets a row that never wins, so the map always has K rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    views = vectors.shape[1]
    x = vectors.reshape(-1, vectors.shape[-1]).astype(np.float64)  # sample-major: every view of a sample
    y = np.repeat(targets, views)
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, max_iter=max_iter, tol=1e-4, class_weight="balanced", random_state=seed)
    clf.fit(scaler.transform(x), y)
    weight = clf.coef_ / scaler.scale_
    bias = clf.intercept_ - weight @ scaler.mean_
    if weight.shape[0] == 1:  # two classes: sklearn keeps one row, the logit of class 1
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    if len(clf.classes_) < num_classes:
        full_w = np.zeros((num_classes, weight.shape[1]))
        full_b = np.full(num_classes, -1e4)
        full_w[clf.classes_], full_b[clf.classes_] = weight, bias
        weight, bias = full_w, full_b
    return Probe(weight.astype(np.float32), bias.astype(np.float32), C, int(np.max(clf.n_iter_)),
                 time.perf_counter() - started)


def write_probe_run(cfg: Config, cache, probe: Probe, run_dir: str | Path, describe: str | None = None,
                    extra: dict | None = None) -> dict:
    """A run directory (config, label map, manifest, metrics, summary, checkpoints) whose model
    is the cache's backbone with `probe` as its linear head; returns its validation row.
    `describe` replaces the train.log line; `extra` is added to summary.json (e.g. a refit's
    cross-validated score, where the val row was seen in training)."""
    from emorec import checkpoint as ckpt_io
    from emorec.config import save_config
    from emorec.data.labels import LabelMap
    from emorec.models import build_model, model_signature, parameter_summary
    from emorec.training.losses import build_loss
    from emorec.training.optim import build_optimizer, build_scheduler
    from emorec.training.run_dir import MetricsLog, check_new_run_dir, write_json
    from emorec.training.run_state import RunState, assemble_checkpoint
    from emorec.training.trainer import adopt_cache
    from emorec.training.validation import macro_f1

    cfg = adopt_cache(cfg, cache, _quiet_logger())
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    run_dir = Path(run_dir)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(run_dir.parent),
                                                             name=run_dir.name))
    check_new_run_dir(run_dir)
    label_map = LabelMap(cache.label_names)
    k = len(label_map)
    model = build_model(cfg.model, k).eval()
    with torch.no_grad():
        model.head.classifier.weight.copy_(torch.from_numpy(probe.weight))
        model.head.classifier.bias.copy_(torch.from_numpy(probe.bias))

    val_x, val_y, _ = load_split(cache, "val", torch.device("cpu"))
    with torch.no_grad():
        logits = model.head(val_x[:, 0])  # the centre view, as the trainer validates
    preds = logits.argmax(1).numpy()
    row = {
        "epoch": 1, "lr": 0.0, "train_loss": float("nan"), "train_accuracy": float("nan"),
        "val_loss": float(build_loss(cfg.loss)(logits, val_y)),
        "val_accuracy": float((preds == val_y.numpy()).mean()),
        "val_macro_f1": macro_f1(val_y.numpy(), preds, k),
        "skipped_images": 0, "bad_steps": 0, "images_per_s": 0.0, "epoch_seconds": probe.seconds,
    }
    state = RunState(cfg.train.monitor, cfg.train.patience)
    state.history.append(row)
    state.early.update(row[cfg.train.monitor], 1)
    state.elapsed_before = probe.seconds
    # A real optimiser and schedule for the head, so `--resume --set train.epochs=N` continues it.
    optimizer = build_optimizer(model.head, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=1, epochs=1)
    stats = cache.index.get("stats", {})
    checkpoint = assemble_checkpoint(
        state, epoch=1, mid_epoch=False, weights=model.state_dict(), optimizer=optimizer, scheduler=scheduler,
        scaler=None, ema_weights=None, cfg=cfg, label_names=label_map.names, signature=model_signature(cfg, k),
        mean=stats.get("data_mean", [0.5] * 3), std=stats.get("data_std", [0.5] * 3))

    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    label_map.save(run_dir / "label_map.json")
    (run_dir / "manifest.csv").write_bytes(Path(cache.manifest_csv).read_bytes())
    MetricsLog(run_dir / "metrics.csv").append(row)
    (run_dir / "train.log").write_text((describe or (
        f"linear probe: sklearn LogisticRegression(C={probe.C}, class_weight=balanced) on the standardised vectors "
        f"of every training view of {cache.root}, {probe.iterations} iterations, {probe.seconds:.1f} s; "
        f"standardisation folded into the linear head")) + "\n")
    ckpt_io.save_checkpoint(run_dir / "checkpoints" / ckpt_io.BEST, checkpoint)
    ckpt_io.save_checkpoint(run_dir / "checkpoints" / ckpt_io.LAST, checkpoint)
    write_json(run_dir / "summary.json", {
        "run_dir": str(run_dir), "backbone": cfg.model.backbone, "params": parameter_summary(model),
        "mode": "linear_probe", "feature_cache": str(cache.root), "num_classes": k, "labels": label_map.names,
        "train_images": int(len(cache.split("train"))), "val_images": int(len(val_y)),
        "epochs_completed": 1, "best_epoch": 1, "monitor": cfg.train.monitor,
        "best_metric": row[cfg.train.monitor], "stopped_early": False, "final": row,
        "wall_time_s": round(probe.seconds, 2), "device": "cpu", "world_size": 1, "amp": "off", "C": probe.C,
        **(extra or {}),
    })
    return row


def _quiet_logger():
    import logging

    return logging.getLogger("emorec.fit")
