"""AdamW parameter groups and the OneCycle schedule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emorec.config import Config, ModelConfig
from emorec.errors import EmorecError
from emorec.models import build_model
from emorec.models.head import EmotionHead
from emorec.training.optim import build_optimizer, build_scheduler


def tiny_config(**model_changes) -> Config:
    cfg = Config()
    cfg.model = dataclasses.replace(ModelConfig(backbone="test_resnet", pretrained=False, hidden_dims=[16],
                                                dropout=[0.1]), **model_changes)
    cfg.train.epochs = 10
    return cfg


def test_weight_decay_only_on_weight_matrices_and_every_parameter_in_one_group():
    cfg = tiny_config()
    model = build_model(cfg.model, 3)
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    for name, group in by_name.items():
        if name.endswith("no_decay"):
            assert group["weight_decay"] == 0.0 and all(p.ndim == 1 for p in group["params"])
        else:
            assert group["weight_decay"] == cfg.optim.weight_decay and all(p.ndim > 1 for p in group["params"])
    head_ids = {id(p) for p in model.head.parameters()}
    assert all(id(p) in head_ids for p in by_name["head"]["params"] + by_name["head_no_decay"]["params"])


def test_vit_tokens_are_not_decayed():
    cfg = tiny_config(backbone="test_vit")
    model = build_model(cfg.model, 3)
    optimizer = build_optimizer(model, cfg)
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.backbone.pos_embed) in no_decay and id(model.backbone.cls_token) in no_decay


def test_a_lone_head_is_all_head_groups():
    cfg = tiny_config()
    optimizer = build_optimizer(EmotionHead(32, 3, hidden_dims=[8], dropout=[0.1]), cfg)
    assert {g["name"] for g in optimizer.param_groups} == {"head", "head_no_decay"}


def lr_curve(optimizer, scheduler, steps: int) -> list[list[float]]:
    curve = []
    for _ in range(steps):
        curve.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return curve


def test_one_cycle_starts_at_lr_peaks_at_max_lr_after_the_warm_up_then_anneals():
    cfg = tiny_config()  # lr 3e-4, max_lr 1e-3, pct_start 0.1, cosine, final_div_factor 1e3
    model = build_model(cfg.model, 3)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    assert scheduler.total_steps == 100  # 10 epochs x 10 optimiser steps
    lrs = [row[-1] for row in lr_curve(optimizer, scheduler, 100)]
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(3e-4)
    assert peak == 9 and lrs[peak] == pytest.approx(1e-3)  # the end of the first 10% of 100 steps
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rises during the warm-up
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then only falls
    assert lrs[-1] == pytest.approx(3e-4 / 1e3, rel=1e-6)
    # Cosine: half-way through the annealing phase the rate is half-way between peak and floor.
    middle = peak + (99 - peak) // 2
    assert lrs[middle] == pytest.approx((1e-3 + 3e-7) / 2, rel=0.02)


def test_warmup_stable_decay_holds_the_peak_and_its_rates_before_the_decay_do_not_depend_on_the_length():
    """What successive halving wants of a schedule: a run cut at a rung and a longer one share
    every rate up to the shorter one's decay, which ends at the same floor as the longer one's."""
    cfg = tiny_config()  # lr 3e-4, max_lr 1e-3, pct_start 0.1, cosine, final_div_factor 1e3
    cfg.optim.schedule, cfg.optim.decay_pct, cfg.optim.warmup_epochs = "wsd", 0.2, 1.0
    curves = {}
    for epochs in (5, 10):
        cfg.train.epochs = epochs
        optimizer = build_optimizer(build_model(cfg.model, 3), cfg)
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
        assert scheduler.total_steps == 10 * epochs
        curves[epochs] = [row[-1] for row in lr_curve(optimizer, scheduler, 10 * epochs)]
    long = curves[10]
    assert long[0] == pytest.approx(3e-4) and long[10] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(long[:10], long[1:11]))  # the warm-up rises
    assert long[10:81] == pytest.approx([1e-3] * 71)  # held until the last 20 of 100 steps
    assert all(a > b for a, b in zip(long[80:], long[81:]))  # then only falls
    assert long[-1] == pytest.approx(1e-6) and curves[5][-1] == pytest.approx(1e-6)
    assert curves[5][:40] == pytest.approx(long[:40])  # the shorter run's decay starts at step 40
    assert curves[5][45] < long[45]


def test_warmup_stable_decay_needs_a_decay_share_that_fits_after_the_warm_up():
    cfg = tiny_config()
    cfg.optim.schedule, cfg.optim.decay_pct = "wsd", 0.95  # with a warm-up of 0.1
    with pytest.raises(EmorecError, match="optim.decay_pct=0.95: a decay of 95 steps after a warm-up of 10"):
        build_scheduler(build_optimizer(build_model(cfg.model, 3), cfg), cfg, 10)


def test_backbone_runs_a_scaled_copy_of_the_curve_when_freezing_is_on():
    cfg = tiny_config(freeze_backbone_epochs=2, backbone_lr_scale=0.1)
    model = build_model(cfg.model, 3)
    optimizer = build_optimizer(model, cfg)
    names = [g["name"] for g in optimizer.param_groups]
    curve = lr_curve(optimizer, build_scheduler(optimizer, cfg, steps_per_epoch=5), 50)
    backbone, head = names.index("backbone"), names.index("head")
    for row in curve:
        assert row[backbone] == pytest.approx(0.1 * row[head])
    assert max(row[head] for row in curve) == pytest.approx(1e-3)

    shared = tiny_config()  # no freezing: one rate for the whole model
    optimizer = build_optimizer(build_model(shared.model, 3), shared)
    assert len({g["lr"] for g in optimizer.param_groups}) == 1


def test_inconsistent_rates_are_user_errors():
    cfg = tiny_config()
    model = build_model(cfg.model, 3)
    cfg.optim.max_lr = 1e-4
    with pytest.raises(EmorecError, match="optim.max_lr=0.0001 is below optim.lr"):
        build_scheduler(build_optimizer(model, cfg), cfg, 10)
    cfg.optim.max_lr, cfg.optim.pct_start = 1e-3, 1.0
    with pytest.raises(EmorecError, match="optim.pct_start"):
        build_scheduler(build_optimizer(model, cfg), cfg, 10)


@pytest.mark.parametrize("freeze_epochs, top", [(0, 1.0), (2, 0.1)])
def test_layer_decay_gives_each_backbone_stage_a_geometrically_smaller_rate(freeze_epochs, top):
    from timm.models import group_parameters

    cfg = tiny_config(backbone="test_efficientnet", freeze_backbone_epochs=freeze_epochs, backbone_lr_scale=0.1)
    cfg.optim.layer_decay = 0.5
    model = build_model(cfg.model, 3)
    optimizer = build_optimizer(model, cfg)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    stage_of = group_parameters(model.backbone, model.backbone.group_matcher(coarse=True), reverse=True)
    stages = max(stage_of.values()) + 1
    assert stages >= 4
    names = {id(p): n for n, p in model.named_parameters()}
    curve = lr_curve(optimizer, build_scheduler(optimizer, cfg, steps_per_epoch=5), 20)
    head = [g["name"] for g in optimizer.param_groups].index("head")
    for i, group in enumerate(optimizer.param_groups):
        if not group["name"].startswith("backbone"):
            assert group["lr_scale"] == 1.0
            continue
        stage = int(group["name"].split(".")[1].split("_")[0])
        assert {stage_of[names[id(p)][len("backbone."):]] for p in group["params"]} == {stage}
        assert group["lr_scale"] == pytest.approx(top * 0.5 ** (stages - 1 - stage))
        for row in curve:  # the whole OneCycle curve keeps the ratio
            assert row[i] == pytest.approx(row[head] * group["lr_scale"])

# -- SGD and reduce-on-plateau (the tuned FER-2013 recipe) -------------------------------------


def test_sgd_has_nesterov_momentum_and_the_same_groups():
    cfg = tiny_config()
    cfg.optim.name, cfg.optim.lr, cfg.optim.momentum = "sgd", 0.01, 0.9
    model = build_model(cfg.model, 3)
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 and g["lr"] == 0.01 for g in optimizer.param_groups)
    assert {g["name"]: g["weight_decay"] for g in optimizer.param_groups} == {
        "backbone": cfg.optim.weight_decay, "backbone_no_decay": 0.0, "head": cfg.optim.weight_decay,
        "head_no_decay": 0.0}


@pytest.mark.parametrize("monitor, values", [
    ("val_accuracy", (0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)),  # higher is better
    ("val_loss", (0.9, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7)),  # lower is better
])
def test_plateau_cuts_the_rate_after_patience_epochs_without_improvement(monitor, values):
    from emorec.training.optim import steps_per_epoch_only

    cfg = tiny_config()
    cfg.optim.schedule, cfg.optim.lr, cfg.optim.plateau_factor, cfg.optim.plateau_patience = "plateau", 0.01, 0.5, 2
    cfg.train.monitor = monitor
    optimizer = build_optimizer(build_model(cfg.model, 3), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    assert steps_per_epoch_only(scheduler)
    rates = []
    # improves for 3 epochs, then stalls: the rate holds for `patience` stalled epochs, then halves
    for value in values:
        scheduler.step(value)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.01] * 5 + [0.005] * 3 + [0.0025])


def test_plateau_starts_at_lr_whatever_max_lr_says():
    from emorec.config import load_config

    cfg = load_config(None, ["optim.schedule=plateau", "optim.name=sgd", "optim.lr=0.01"])  # max_lr 1e-3 < lr
    assert cfg.optim.lr == 0.01
    with pytest.raises(EmorecError, match="optim.max_lr"):
        load_config(None, ["optim.lr=0.01"])  # OneCycle would fall from lr to a lower "peak"
