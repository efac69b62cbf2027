"""Head-only training: learns from cached vectors and writes a run directory whose checkpoint is
a whole EmotionClassifier (frozen backbone + trained head)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from emorec.config import Config
from emorec.errors import EmorecError
from emorec.features.extract import extract_features
from emorec.features.head_training import fit_head, head_batch_size, predict_probs, train_head

BACKBONE = "test_efficientnet"


def toy_features(n: int, views: int, seed: int, channels: int = 32, classes: int = 3):
    """Three well separated Gaussian blobs, non-negative like pooled CNN features."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.eye(classes, channels) * 4 + 1
    x = centres[y][:, None, :] + 0.5 * torch.randn(n, views, channels, generator=g)
    return x.clamp_min(0), y


def small_head_cfg(epochs: int = 15) -> Config:
    cfg = Config()
    cfg.model.hidden_dims = [32]
    cfg.model.dropout = [0.1]
    cfg.model.attention_reduction = 4
    cfg.train.epochs = epochs
    cfg.train.device = "cpu"
    cfg.optim.max_lr = 3e-3
    return cfg


def make_head(cfg: Config, channels: int, classes: int):
    from emorec.models.head import EmotionHead

    m = cfg.model
    return EmotionHead(channels, classes, m.attention, m.attention_reduction, m.hidden_dims, m.dropout, m.activation)


def test_fit_head_learns_a_separable_toy_set():
    x, y = toy_features(300, views=2, seed=0)
    xv, yv = toy_features(90, views=2, seed=1)
    cfg = small_head_cfg()
    head = make_head(cfg, 32, 3)
    res = fit_head(head, x, y, xv, yv, cfg, 3)
    assert res.best_metric > 0.95
    assert 1 <= res.best_epoch <= res.epochs_run <= 15
    preds = predict_probs(head, xv, views=2).argmax(-1)
    assert (preds == yv).float().mean() > 0.95


def test_early_stopping_ends_the_run_when_val_stops_improving():
    x, y = toy_features(120, views=1, seed=0)
    xv, yv = toy_features(30, views=1, seed=1)
    cfg = small_head_cfg(epochs=60)
    cfg.train.patience = 3
    res = fit_head(make_head(cfg, 32, 3), x, y, xv, yv, cfg, 3)
    assert res.epochs_run < 60 and res.epochs_run - res.best_epoch == 3


def test_a_run_of_a_few_steps_still_schedules():
    # OneCycle needs two warm-up steps; 12 vectors x 2 epochs is 2 steps in all.
    x, y = toy_features(12, views=1, seed=0)
    cfg = small_head_cfg(epochs=2)
    res = fit_head(make_head(cfg, 32, 3), x, y, x, y, cfg, 3)
    assert res.epochs_run == 2


def test_large_datasets_use_large_batches_small_ones_keep_steps():
    assert head_batch_size(20000, 32) == 1024
    assert head_batch_size(800, 32) == 50  # still 16 steps per epoch
    assert head_batch_size(100, 32) == 32


@pytest.fixture
def head_run(tiny_dataset: Path, tmp_path: Path):
    cfg = Config()
    cfg.data.val_fraction = 0.25
    cfg.data.test_fraction = 0.25
    cache = extract_features(str(tiny_dataset), BACKBONE, pretrained=False, image_size=32, augmented_views=1,
                             grid=0, cache_dir=tmp_path / "cache", cfg=cfg, num_workers=0, dtype="float32",
                             progress=False, log=lambda _m: None)
    cfg = small_head_cfg(epochs=12)
    cfg.train.features_dir = str(tmp_path / "cache")
    cfg.train.output_dir = str(tmp_path / "runs")
    cfg.train.name = "head"
    result = train_head(cfg, log=lambda _m: None)
    return cache, result


def test_train_head_writes_a_normal_run_dir(head_run):
    cache, result = head_run
    run = result.run_dir
    for name in ("config.yaml", "label_map.json", "manifest.csv", "metrics.csv", "summary.json",
                 "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result.epochs_completed and "val_macro_f1" in rows[0]
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["format"] == "emorec-checkpoint" and ckpt["label_map"] == cache.label_names
    assert ckpt["config"]["model"]["backbone"] == BACKBONE  # adopted from the cache
    assert any(k.startswith("backbone.") for k in ckpt["model"])
    assert any(k.startswith("head.") for k in ckpt["model"])


def test_checkpoint_loads_into_build_model_and_matches_the_cached_head(head_run):
    from emorec.config import config_from_dict
    from emorec.data.imageio import load_rgb
    from emorec.data.transforms import build_eval_transform
    from emorec.models.classifier import build_model

    cache, result = head_run
    ckpt = torch.load(result.run_dir / "checkpoints" / "best.pt", weights_only=True)
    cfg = config_from_dict(ckpt["config"])
    model = build_model(cfg.model, len(ckpt["label_map"]))
    model.load_state_dict(ckpt["model"])
    model.eval()

    val = cache.split("val")
    transform = build_eval_transform(cfg, ckpt["data_mean"], ckpt["data_std"])
    images = torch.stack([transform(load_rgb(p)) for p in val.paths])
    with torch.no_grad():
        full = model(images)
        cached = model.head(torch.from_numpy(np.array(val.pooled[:, 0])))
    # Same numbers from pixels through the backbone as from the cached vectors.
    torch.testing.assert_close(full, cached, rtol=1e-3, atol=1e-4)


def test_interrupted_run_resumes_where_it_stopped(tiny_dataset: Path, tmp_path: Path, monkeypatch):
    import emorec.features.head_training as ht

    cfg = Config()
    cfg.data.val_fraction = 0.25
    cfg.data.test_fraction = 0.25
    extract_features(str(tiny_dataset), BACKBONE, pretrained=False, image_size=32, grid=0,
                     cache_dir=tmp_path / "cache", cfg=cfg, num_workers=0, progress=False, log=lambda _m: None)
    cfg = small_head_cfg(epochs=8)
    cfg.train.patience = 0
    cfg.train.features_dir = str(tmp_path / "cache")
    cfg.train.output_dir = str(tmp_path / "runs")
    real_f1, calls = ht.macro_f1, []

    def interrupt_in_epoch_5(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_f1(*args)

    monkeypatch.setattr(ht, "macro_f1", interrupt_in_epoch_5)
    with pytest.raises(KeyboardInterrupt):
        train_head(cfg, log=lambda _m: None)
    monkeypatch.setattr(ht, "macro_f1", real_f1)
    assert torch.load(cfg.run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 4

    resumed = train_head(cfg, resume=str(cfg.run_dir), log=lambda _m: None)
    assert resumed.epochs_completed == 8
    with open(cfg.run_dir / "metrics.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == list(range(1, 9))


def test_head_only_without_a_cache_is_a_one_line_error(tmp_path: Path):
    cfg = small_head_cfg()
    with pytest.raises(EmorecError, match="features_dir"):
        train_head(cfg)
    cfg.train.features_dir = str(tmp_path / "nowhere")
    with pytest.raises(EmorecError, match="features extract"):
        train_head(cfg)
