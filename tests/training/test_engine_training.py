"""Whole runs of `train(cfg)` on tiny timm models: what a run writes and how the loop behaves."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

from emorec.config import load_config
from emorec.errors import EmorecError
from emorec.training.result import RunResult
from emorec.training.run_dir import METRIC_COLUMNS
from emorec.training.trainer import cpu_threads_beside_workers, resolve_amp, train
from training_runs import (  # noqa: F401 (one_thread is a fixture)
    checkpoint_weights, make_images, max_abs_diff, metric_rows, tiny_config, one_thread,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CHECKPOINT_KEYS = {"format", "format_version", "model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step",
                   "batch_in_epoch", "rng", "config", "label_map", "model_signature", "versions", "best_metric",
                   "early_stopping", "data_mean", "data_std"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("data") / "images", per_class=20)


def test_a_run_writes_the_documented_run_directory(data, tmp_path):
    result = train(tiny_config(data, tmp_path, "run", "train.ema=true"))
    run = tmp_path / "run"
    assert isinstance(result, RunResult) and result.run_dir == run and result.epochs_completed == 2
    for name in ("config.yaml", "label_map.json", "manifest.csv", "metrics.csv", "train.log", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    saved = load_config(run / "config.yaml")
    assert saved.model.backbone == "test_resnet" and saved.train.ema is True
    assert json.loads((run / "label_map.json").read_text())["names"] == ["amusement", "anger", "awe", "fear"]
    manifest = (run / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "path,label,split" and len(manifest) == 81
    assert {line.rsplit(",", 1)[1] for line in manifest[1:]} == {"train", "val", "test"}

    rows = metric_rows(run)
    assert tuple(rows[0].keys()) == METRIC_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["val_macro_f1"]) <= 1.0 and float(r["images_per_s"]) > 0 for r in rows)
    assert "epoch   2/2" in (run / "train.log").read_text()
    wall = [float(r["wall_time_s"]) for r in rows]
    assert 0 < wall[0] < wall[1] <= result.wall_time_s
    with Image.open(run / "learning_curve.png") as picture:  # val scores against wall time, per epoch
        picture.verify()
        assert picture.format == "PNG" and min(picture.size) >= 300

    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == result.best_epoch in (1, 2)
    assert summary["params"]["total"] > 0 and summary["wall_time_s"] > 0

    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert CHECKPOINT_KEYS <= last.keys()
    assert last["epoch"] == 2 and last["batch_in_epoch"] == 0 and last["label_map"] == ["amusement", "anger", "awe", "fear"]
    assert set(last["versions"]) == {"emorec", "torch", "timm", "python"}
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch
    if best["epoch"] == 2:  # with EMA on, best.pt carries the averaged weights that were validated
        assert max_abs_diff(best["model"], last["ema"]) == 0.0


def test_a_second_run_with_the_same_name_is_refused(data, tmp_path):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=1"))
    with pytest.raises(EmorecError, match=r"already holds a run.*--resume"):
        train(tiny_config(data, tmp_path, "run", "train.epochs=1"))


def test_two_batches_of_16_with_accumulation_match_one_batch_of_32(data, tmp_path):
    # A backbone without BatchNorm (test_convnext uses LayerNorm) and a linear head: batch
    # statistics cannot differ between the two layouts; MixUp pairs samples within a batch, so it is
    # off too. Class weights off: a class-weighted mean
    # is normalised per batch, so it is not the same average over 2 x 16 as over 32.
    common = ("model.backbone=test_convnext", "model.hidden_dims=[]", "model.dropout=[]", "train.epochs=1",
              "loss.class_weights=none", "data.weighted_sampling=false", "augment.mix_prob=0", "train.amp=off")
    train(tiny_config(data, tmp_path, "accum", *common, "data.batch_size=16", "optim.accumulation_steps=2"))
    train(tiny_config(data, tmp_path, "plain", *common, "data.batch_size=32", "optim.accumulation_steps=1"))
    a, b = checkpoint_weights(tmp_path / "accum"), checkpoint_weights(tmp_path / "plain")
    assert max_abs_diff(a, b) < 1e-5
    ra, rb = metric_rows(tmp_path / "accum")[0], metric_rows(tmp_path / "plain")[0]
    assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-5)


def test_loss_decreases_on_a_learnable_set(data, tmp_path):
    # Colour is what tells these classes apart, so colour jitter is off; validation is the steady
    # measure (train loss also moves with each epoch's augmentation draws).
    result = train(tiny_config(data, tmp_path, "learn", "train.epochs=3", "optim.max_lr=0.01", "optim.lr=0.003",
                               "optim.accumulation_steps=1", "augment.mix_prob=0", "augment.color_jitter=0"))
    val_losses = [r["val_loss"] for r in result.history]
    assert val_losses[-1] < val_losses[0]
    assert min(r["train_loss"] for r in result.history[1:]) < result.history[0]["train_loss"]
    assert result.history[-1]["val_accuracy"] > 0.5  # chance is 1/4


def test_frozen_backbone_epochs_leave_the_backbone_untouched(data, tmp_path):
    cfg = tiny_config(data, tmp_path, "frozen", "model.freeze_backbone_epochs=1", "train.epochs=2")
    train(cfg)
    from emorec.models import build_model

    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg.model, 4).state_dict()
    after_1 = torch.load(tmp_path / "frozen" / "checkpoints" / "last.prev.pt", weights_only=True)["model"]
    after_2 = checkpoint_weights(tmp_path / "frozen")
    conv = next(k for k in initial if k.startswith("backbone.") and k.endswith("weight") and initial[k].ndim == 4)
    head = next(k for k in initial if k.startswith("head.") and k.endswith("weight"))
    assert torch.equal(after_1[conv], initial[conv]), "backbone frozen in epoch 1"
    assert not torch.equal(after_1[head], initial[head]), "head trained in epoch 1"
    assert not torch.equal(after_2[conv], after_1[conv]), "backbone trained after unfreezing"


def test_early_stopping_ends_the_run_after_patience_epochs(data, tmp_path):
    # lr ~0 cannot improve after epoch 1, so patience 1 stops after epoch 2.
    result = train(tiny_config(data, tmp_path, "patient", "train.epochs=5", "train.patience=1", "optim.lr=0.000000000001",
                               "optim.max_lr=0.000000000001", "train.limit_train_batches=1", "model.dropout=[0.0]",
                               "augment.mix_prob=0"))
    assert result.stopped_early and result.epochs_completed == 2 and result.best_epoch == 1


def test_head_only_without_a_feature_cache_is_a_one_line_error():
    cfg = load_config(None, ["train.head_only=true"])
    with pytest.raises(EmorecError, match="needs cached features"):
        train(cfg)


def test_amp_auto_is_bf16_only_on_cpus_with_native_bf16_and_fp16_needs_cuda(monkeypatch):
    import emorec.training.trainer as trainer

    cpu = torch.device("cpu")
    monkeypatch.setattr(trainer, "cpu_bf16_supported", lambda: False)
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    monkeypatch.setattr(trainer, "cpu_bf16_supported", lambda: True)
    assert resolve_amp("auto", cpu) == torch.bfloat16 and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(EmorecError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)


def test_cpu_training_leaves_the_loader_workers_their_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert cpu_threads_beside_workers(2) == 14
    assert cpu_threads_beside_workers(2, world_size=2) == 6  # (16 - 2 x 2 workers) / 2 ranks
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cpu_threads_beside_workers(2) == 1  # never below one thread
