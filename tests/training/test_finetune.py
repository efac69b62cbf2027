"""Fine-tuning without destroying the pretrained features: BatchNorm kept in eval mode, starting
from a fitted head (`model.init_from`, LP-FT), and the trainer's time limit."""

from __future__ import annotations

import pytest
import torch

from emorec.api import train
from emorec.config import Config, load_config
from emorec.errors import EmorecError
from emorec.models import build_model, set_batchnorm_frozen
from emorec.training.finetune import batchnorm_frozen
from emorec.training.seeding import seed_everything
from training_runs import (  # noqa: F401 (cache, data and one_thread are fixtures)
    cache, checkpoint_weights, data, head_only, metric_rows, one_thread, tiny_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def bn_statistics(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items() if k.startswith("backbone.") and k.endswith(BN_STATS)}


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_batchnorm_keeps_its_statistics_through_a_training_step(frozen):
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained = "test_resnet", False
    cfg.model.hidden_dims, cfg.model.dropout = [8], [0.0]
    torch.manual_seed(0)
    model = build_model(cfg.model, 3)
    set_batchnorm_frozen(model, frozen)
    model.train()
    before = bn_statistics(model.state_dict())
    stem_scale = model.backbone.bn1.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32) * 3 + 1), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    after = bn_statistics(model.state_dict())
    assert before, "the backbone has BatchNorm layers"
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert (len(unchanged) == len(before)) is frozen and (len(unchanged) == 0) is not frozen
    assert not torch.equal(stem_scale, model.backbone.bn1.weight), "scale and shift still learn"
    assert model.head.training, "only the backbone's BatchNorm layers are in eval mode"


@pytest.mark.parametrize("settings, frozen", [
    ({"freeze_bn": "true", "pretrained": False}, True),
    ({"freeze_bn": "false", "freeze_backbone_epochs": 3}, False),
    ({"pretrained": False, "freeze_backbone_epochs": 3}, False),  # a random backbone needs its statistics
    ({"batch_size": 16}, True),  # pretrained, small batch
    ({"batch_size": 32}, False),  # pretrained, full training from the start
    ({"freeze_backbone_epochs": 3}, True),  # LP-FT: head first
    ({"pretrained": False, "weights": "w.safetensors", "freeze_backbone_epochs": 2}, True),
    ({"pretrained": False, "init_from": "runs/probe"}, True),  # LP-FT from a fitted head
])
def test_freeze_bn_auto_rule(settings, frozen):
    cfg = Config()
    for key, value in settings.items():
        setattr(cfg.data if key == "batch_size" else cfg.model, key, value)
    assert batchnorm_frozen(cfg) is frozen


@pytest.mark.parametrize("freeze_bn", ["true", "false"])
def test_the_trainer_keeps_backbone_statistics_with_freeze_bn(data, tmp_path, freeze_bn):
    cfg = tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=2",
                      f"model.freeze_bn={freeze_bn}")
    train(cfg)
    seed_everything(cfg.train.seed)  # the trainer's initial weights
    initial = bn_statistics(build_model(cfg.model, 4).state_dict())
    trained = bn_statistics(checkpoint_weights(tmp_path / "run"))
    same = all(torch.equal(initial[k], trained[k]) for k in initial)
    assert same is (freeze_bn == "true")
    assert ("BatchNorm in eval mode" in (tmp_path / "run" / "train.log").read_text()) is (freeze_bn == "true")


def test_lp_ft_starts_from_the_fitted_head_with_a_slower_backbone(data, cache, tmp_path, monkeypatch):
    import emorec.training.trainer as trainer

    probe = train(tiny_config(data, tmp_path, "probe", "train.epochs=2", *head_only(cache)))
    probe_weights = checkpoint_weights(probe.run_dir, "best.pt")
    seen = {}
    real = trainer.train_one_epoch

    def recording(model, loader, loss_fn, optimizer, *args, **kwargs):
        seen.setdefault("weights", {k: v.clone() for k, v in model.state_dict().items()})
        seen.setdefault("lrs", {g["name"]: g["lr"] for g in optimizer.param_groups})
        return real(model, loader, loss_fn, optimizer, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", recording)
    cfg = tiny_config(data, tmp_path, "lpft", "train.epochs=1", "train.limit_train_batches=2",
                      "model.backbone=test_efficientnet", f"model.init_from={probe.run_dir}",
                      "model.backbone_lr_scale=0.1")
    train(cfg)
    assert seen["weights"].keys() == probe_weights.keys()
    assert all(torch.equal(seen["weights"][k], probe_weights[k]) for k in probe_weights)
    assert seen["lrs"]["backbone"] == pytest.approx(0.1 * seen["lrs"]["head"])
    assert "weights from" in (tmp_path / "lpft" / "train.log").read_text()


def test_init_from_another_model_is_a_one_line_error(data, cache, tmp_path):
    probe = train(tiny_config(data, tmp_path, "probe", "train.epochs=1", *head_only(cache)))
    cfg = tiny_config(data, tmp_path, "lpft", "train.epochs=1", f"model.init_from={probe.run_dir}")  # test_resnet
    with pytest.raises(EmorecError, match="model.init_from .* is another model .*backbone"):
        train(cfg)
    assert not (tmp_path / "lpft").exists()


def test_the_time_limit_ends_the_run_with_a_resumable_checkpoint(data, tmp_path):
    result = train(tiny_config(data, tmp_path, "run", "train.epochs=2", "optim.accumulation_steps=1",
                               "train.time_limit_s=0.000001"))
    assert result.stopped_early and result.epochs_completed == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["batch_in_epoch"] == 1, "stopped after the first optimiser step"
    resumed = train(load_config(tmp_path / "run" / "config.yaml", ["train.time_limit_s=0"]), resume=tmp_path / "run")
    assert resumed.epochs_completed == 2 and [r["epoch"] for r in metric_rows(tmp_path / "run")] == ["1", "2"]


def test_stop_after_epoch_ends_a_rung_with_the_schedule_planned_for_every_epoch(data, tmp_path):
    """fit's rungs: the first invocation stops after epoch 1 of a 3-epoch OneCycle, the resumed
    one (a new train.epochs of 2: the plan measured again) finishes the same schedule, resized."""
    first = train(tiny_config(data, tmp_path, "run", "train.epochs=3", "train.stop_after_epoch=1"))
    assert first.stopped_early and first.epochs_completed == 1
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    steps = ckpt["scheduler"]["total_steps"]
    assert ckpt["epoch"] == 1 and ckpt["scheduler"]["last_epoch"] == steps // 3, "a third of the planned steps"
    resumed = train(load_config(tmp_path / "run" / "config.yaml", ["train.stop_after_epoch=0", "train.epochs=2"]),
                    resume=tmp_path / "run")
    assert resumed.epochs_completed == 2 and not resumed.stopped_early
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["scheduler"]
    assert final["total_steps"] == 2 * steps // 3 and final["last_epoch"] == final["total_steps"], "decayed to the end"
