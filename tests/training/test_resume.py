"""`--resume`: a run that stopped continues exactly (full and head-only training alike),
refuses foreign checkpoints and changed settings, extends with a new schedule, and survives a
corrupt last checkpoint."""

from __future__ import annotations

import pytest
import torch

from emorec.api import train
from emorec.config import load_config
from emorec.errors import EmorecError
from emorec.training.result import TrainingInterrupted
from training_runs import (  # noqa: F401 (cache, data and one_thread are fixtures)
    SAME_RESULT_COLUMNS, cache, checkpoint_weights, crash_in_epoch, data, head_only, max_abs_diff, metric_rows,
    one_thread, sigterm_at_step, tiny_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# MixUp, dropout, augmentation, weighted sampling and EMA all on: everything random must resume.
RANDOM_PARTS = ("augment.mix_prob=0.5", "train.ema=true", "train.epochs=3")


# Fine-tuning settings that change what a step does: head first, frozen BatchNorm statistics and
# per-stage learning rates must come back identically too.
LP_FT = ("model.freeze_backbone_epochs=1", "model.freeze_bn=true", "optim.layer_decay=0.7")
# augment.backend=tensor augments in batches on the training device, here with its per-image policy.
TENSOR = ("augment.backend=tensor", "augment.auto_augment=autoaugment")

MODES = {"images": lambda cache: (), "tensor": lambda cache: TENSOR, "features": head_only,
         "lp-ft": lambda cache: LP_FT}


@pytest.fixture(params=["images", "tensor", "features"])
def mode(request, cache):
    """The same resume tests for full training (augmented per image in the loader, or in batches by
    `augment.backend=tensor`) and for head-only training on cached features."""
    return MODES[request.param](cache)


@pytest.fixture(params=list(MODES))
def any_mode(request, cache):
    """`mode`, plus LP-FT (frozen first, frozen BatchNorm, layer decay) where it is worth its time."""
    return MODES[request.param](cache)


def assert_same_run(a_dir, b_dir, a_history, b_history):
    assert len(a_history) == len(b_history)
    for a, b in zip(a_history, b_history, strict=True):
        assert {k: a[k] for k in SAME_RESULT_COLUMNS} == {k: b[k] for k in SAME_RESULT_COLUMNS}
    assert max_abs_diff(checkpoint_weights(a_dir), checkpoint_weights(b_dir)) == 0.0
    assert [r["epoch"] for r in metric_rows(b_dir)] == [str(r["epoch"]) for r in a_history], "no duplicated rows"


def test_a_crash_in_epoch_2_then_resume_gives_the_uninterrupted_results(data, tmp_path, monkeypatch, any_mode):
    mode = any_mode
    whole = train(tiny_config(data, tmp_path, "whole", *RANDOM_PARTS, *mode))
    with monkeypatch.context() as m:
        crash_in_epoch(m, 2)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(tiny_config(data, tmp_path, "split", *RANDOM_PARTS, *mode))
    assert [r["epoch"] for r in metric_rows(tmp_path / "split")] == ["1"]
    resumed = train(load_config(tmp_path / "split" / "config.yaml"), resume=tmp_path / "split")
    assert resumed.epochs_completed == 3
    assert_same_run(tmp_path / "whole", tmp_path / "split", whole.history, resumed.history)


def test_sigterm_mid_epoch_saves_a_checkpoint_and_resume_ends_with_the_uninterrupted_weights(
        data, tmp_path, monkeypatch, mode):
    settings = (*RANDOM_PARTS, "data.batch_size=4", "optim.accumulation_steps=2", *mode)
    whole = train(tiny_config(data, tmp_path, "whole", *settings))
    with monkeypatch.context() as m:
        sigterm_at_step(m, epoch=2, step=1)
        with pytest.raises(TrainingInterrupted, match="SIGTERM") as stopped:
            train(tiny_config(data, tmp_path, "stopped", *settings))
    assert stopped.value.exit_code == 128 + 15
    ckpt = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] > 0, "a mid-epoch checkpoint"
    resumed = train(load_config(tmp_path / "stopped" / "config.yaml"), resume=tmp_path / "stopped")
    assert_same_run(tmp_path / "whole", tmp_path / "stopped", whole.history, resumed.history)


@pytest.mark.parametrize("override", ["data.batch_size=4", "optim.accumulation_steps=1", "train.monitor=val_loss",
                                      "optim.name=sgd", "optim.schedule=plateau"])
def test_resume_with_a_changed_batch_accumulation_or_monitor_is_refused(data, tmp_path, override):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=2"))
    key = override.split("=")[0]
    cfg = load_config(tmp_path / "run" / "config.yaml", [override, "train.epochs=2"])
    with pytest.raises(EmorecError, match=f"{key} was .* a resumed run keeps it"):
        train(cfg, resume=tmp_path / "run")


# SGD + reduce-on-plateau with patience 0 and a large rate: the rate is cut whenever the metric stalls,
# so the plateau's state (best, bad epochs, rates) must come back for the runs to match.
PLATEAU = ("optim.name=sgd", "optim.schedule=plateau", "optim.lr=0.05", "optim.plateau_patience=0",
           "optim.plateau_factor=0.5", "train.monitor=val_accuracy", "train.epochs=3", "train.limit_train_batches=3")


def test_sgd_with_plateau_resumes_exactly_and_extends_at_its_last_rate(data, tmp_path, monkeypatch):
    whole = train(tiny_config(data, tmp_path, "whole", *PLATEAU))
    rates = [float(r["lr"]) for r in metric_rows(tmp_path / "whole")]
    assert rates[0] == pytest.approx(0.05) and min(rates) < 0.05, "the rate is cut at least once"
    with monkeypatch.context() as m:
        crash_in_epoch(m, 3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(tiny_config(data, tmp_path, "split", *PLATEAU))
    resumed = train(load_config(tmp_path / "split" / "config.yaml"), resume=tmp_path / "split")
    assert_same_run(tmp_path / "whole", tmp_path / "split", whole.history, resumed.history)
    before = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    assert before["scheduler"]["mode"] == "max" and "num_bad_epochs" in before["scheduler"]

    train(load_config(tmp_path / "split" / "config.yaml", ["train.epochs=4"]), resume=tmp_path / "split")
    rows = metric_rows(tmp_path / "split")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    # no warm-up restart: epoch 4 runs at the rate the plateau had reached
    assert float(rows[3]["lr"]) == pytest.approx(max(g["lr"] for g in before["optimizer"]["param_groups"]))


def test_extending_a_finished_run_warms_up_a_new_schedule(data, tmp_path, monkeypatch):
    import emorec.training.trainer as trainer

    train(tiny_config(data, tmp_path, "run", "train.epochs=2", "train.limit_train_batches=4"))
    first_lr = []
    real = trainer.train_one_epoch

    def recording(model, loader, loss_fn, optimizer, *args, **kwargs):
        first_lr.append(max(g["lr"] for g in optimizer.param_groups))
        return real(model, loader, loss_fn, optimizer, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", recording)
    cfg = load_config(tmp_path / "run" / "config.yaml", ["train.epochs=4"])
    train(cfg, resume=tmp_path / "run")
    # Epoch 3 starts the new cycle at optim.lr, not at the old cycle's end (lr / 1e3) or its peak.
    assert first_lr[0] == pytest.approx(cfg.optim.lr)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["schedule_start_epoch"] == 2 and ckpt["scheduler"]["total_steps"] == 2 * 2  # 2 epochs x 2 steps
    assert [r["epoch"] for r in metric_rows(tmp_path / "run")] == ["1", "2", "3", "4"]


def test_a_larger_epoch_count_extends_a_finished_run(data, tmp_path):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=2"))
    cfg = load_config(tmp_path / "run" / "config.yaml", ["train.epochs=2"])
    result = train(cfg, resume=tmp_path / "run")
    assert result.epochs_completed == 2 and [r["epoch"] for r in metric_rows(tmp_path / "run")] == ["1", "2"]
    assert load_config(tmp_path / "run" / "config.yaml").train.epochs == 2


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_epoch(data, tmp_path, capsys):
    train(tiny_config(data, tmp_path, "run", "train.limit_train_batches=2"))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    capsys.readouterr()
    result = train(load_config(tmp_path / "run" / "config.yaml"), resume=tmp_path / "run")
    err = capsys.readouterr().err
    assert "last.pt is truncated or corrupt" in err and "using the previous checkpoint" in err
    assert "resumed" in (tmp_path / "run" / "train.log").read_text()
    assert result.epochs_completed == 2 and [r["epoch"] for r in metric_rows(tmp_path / "run")] == ["1", "2"]


@pytest.mark.parametrize("override, message", [
    ("model.backbone=test_efficientnet", "made by a different model .*backbone"),
    ("model.hidden_dims=[32]", "made by a different model .*hidden_dims"),
])
def test_a_checkpoint_of_another_model_is_refused(data, tmp_path, override, message):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=1"))
    cfg = load_config(tmp_path / "run" / "config.yaml", [override, "train.epochs=2"])
    with pytest.raises(EmorecError, match=message):
        train(cfg, resume=tmp_path / "run")


def test_a_checkpoint_of_another_label_map_is_refused(data, tmp_path):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=1"))
    manifest = tmp_path / "run" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",awe,", ",wonder,"))
    with pytest.raises(EmorecError, match=r"trained on labels .* but the data has"):
        train(load_config(tmp_path / "run" / "config.yaml", ["train.epochs=2"]), resume=tmp_path / "run")
