"""The optimiser (AdamW or SGD with Nesterov momentum) with parameter groups, and the learning-rate
schedule (OneCycle, warmup-stable-decay, or reduce-on-plateau).

Groups: backbone and head parameters are kept apart so the backbone can learn more slowly
(discriminative learning rates, Howard & Ruder 2018), and within each, weight decay applies only
to weight matrices and kernels: biases, norm scales/shifts (every 1-D tensor) and the tokens a
timm model lists in `no_weight_decay()` (ViT position embeddings, class token) are not decayed,
because shrinking them towards zero only fights the normalisation (Loshchilov & Hutter 2019 apply
decay to weights; timm's `param_groups_weight_decay` makes the same split).

What `optim.lr` (3e-4) and `optim.max_lr` (1e-3) mean: OneCycle (Smith & Topin 2019) starts at
`lr`, warms up to the peak `max_lr` over the first `pct_start` of the optimiser steps, then anneals
(cosine by default) to `lr / final_div_factor`. So `div_factor = max_lr / lr`. With
`model.freeze_backbone_epochs > 0` or `model.init_from` (LP-FT: the head is fitted before the
backbone trains) the backbone group runs the same curve scaled by `model.backbone_lr_scale` (the
backbone gets no gradient while frozen, and after unfreezing its pretrained features move at a
tenth of the head's rate); otherwise the whole model shares one rate. OneCycle's own momentum
cycling is off: AdamW keeps its usual betas.

Layer-wise decay (`optim.layer_decay` < 1; BEiT, Bao et al. ICLR 2022; Howard & Ruder's
discriminative rates): the backbone is split into its stages by timm's own `group_matcher`
(coarse: stem, each stage, what follows the last), and stage i of L runs at
`backbone scale * layer_decay ** (L - 1 - i)`: the top stage at the backbone's rate, each one
below at `layer_decay` times the rate above it. Early stages hold generic features (edges,
colour, texture) that small data should move least.

`optim.name: sgd` is SGD with Nesterov momentum (`optim.momentum`), the optimiser of the tuned
FER-2013 VGG recipe (Khaireddin & Chen 2021, "Facial Emotion Recognition: State of the Art
Performance on FER2013"), whose schedule is `optim.schedule: plateau`: ReduceLROnPlateau on the
validation metric `train.monitor`, starting at `optim.lr` and multiplied by `optim.plateau_factor`
after `optim.plateau_patience` epochs without improvement. Plateau steps once per epoch, after
validation (`steps_per_epoch_only`), OneCycle once per optimiser step.

`optim.schedule: wsd` is warmup-stable-decay (Hu et al. 2024, "MiniCPM"; Hägele et al. 2024,
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"): the same warm-up
from `lr` to `max_lr` (over `optim.warmup_epochs`, else `pct_start` of the run), the peak held,
then annealed to `max_lr / final_div_factor` over the last `optim.decay_pct` of the steps. Before
its decay the rate does not depend on the run's length, so a run cut short (a rung of successive
halving) and one trained on see the same rates; a rung's score is then a short run of its own,
its decay at the rung's end. OneCycle by contrast stretches with the length it was planned for.
benchmarks/RESULTS.md measured which ranks fine-tunes better at a rung: OneCycle, on a small test.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from emorec.errors import EmorecError


def _no_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names that timm models exempt from weight decay (ViT tokens etc.)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        hook = getattr(module, "no_weight_decay", None)
        if callable(hook):
            try:
                listed = hook()
            except TypeError:
                continue
            names |= {f"{prefix}.{n}" if prefix else n for n in listed}
    return names


def backbone_stages(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """({parameter name: stage index}, number of stages) from timm's coarse `group_matcher`;
    a model without one is a single stage (logged: layer decay then has no effect)."""
    from timm.models import group_parameters

    members = getattr(backbone, "members", None)
    if members is not None:  # a BackboneGroup: each member's stages, aligned at the top stage
        parts = [backbone_stages(m) for m in members]
        total = max(n for _, n in parts)
        return {f"members.{i}.{name}": stage + total - n for i, (stages, n) in enumerate(parts)
                for name, stage in stages.items()}, total
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        logging.getLogger("emorec").warning("optim.layer_decay: %s has no timm group_matcher; the backbone is one "
                                            "group", type(backbone).__name__)
        return {name: 0 for name, _ in backbone.named_parameters()}, 1
    stage_of = group_parameters(backbone, matcher(coarse=True), reverse=True)
    return stage_of, max(stage_of.values()) + 1


def param_groups(model: nn.Module, weight_decay: float, backbone_lr_scale: float = 1.0,
                 layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: {backbone, head} x {decay, no decay}, each tagged with `name` and
    `lr_scale` (the backbone's share of the head's learning rate). Parameters outside a
    `backbone` submodule (e.g. a lone head) count as head. Frozen parameters are included, so
    they train once unfrozen without rebuilding the optimiser. With `layer_decay` < 1 the
    backbone groups are split per stage (`backbone.<i>`, `backbone.<i>_no_decay`), stage i of L
    scaled by `layer_decay ** (L - 1 - i)` on top of `backbone_lr_scale`."""
    exempt = _no_decay_names(model)
    backbone = getattr(model, "backbone", None)
    stage_of, stages = ({}, 1)
    if layer_decay < 1.0 and backbone is not None:
        stage_of, stages = backbone_stages(backbone)
    buckets: dict[tuple[str, int, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        part = "backbone" if name.startswith("backbone.") else "head"
        stage = stage_of.get(name[len("backbone."):], stages - 1) if part == "backbone" and stage_of else -1
        decay = p.ndim > 1 and name not in exempt
        buckets.setdefault((part, stage, decay), []).append(p)
    groups = []
    for (part, stage, decay), params in sorted(buckets.items()):
        scale = 1.0
        if part == "backbone":
            scale = backbone_lr_scale * (layer_decay ** (stages - 1 - stage) if stage >= 0 else 1.0)
        groups.append({
            "params": params,
            "name": f"{part}{f'.{stage}' if stage >= 0 else ''}{'' if decay else '_no_decay'}",
            "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": scale,
        })
    return groups


def backbone_lr_scale(cfg) -> float:
    """The backbone's share of the head's rate: `model.backbone_lr_scale` for LP-FT runs (frozen
    first, or started from a fitted head with `model.init_from`), else 1."""
    model = cfg.model
    return model.backbone_lr_scale if model.freeze_backbone_epochs > 0 or model.init_from else 1.0


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW or SGD (`optim.name`) over `param_groups(model, ...)` from `Config.optim` and
    `Config.model`; each group starts at `optim.lr * lr_scale` (the scheduler then drives it)."""
    optim = cfg.optim
    if optim.lr <= 0 or optim.weight_decay < 0:
        raise EmorecError(f"optim.lr={optim.lr}, optim.weight_decay={optim.weight_decay}: the learning rate must be "
                          "> 0 and the weight decay >= 0")
    scale = backbone_lr_scale(cfg)
    if scale <= 0:
        raise EmorecError(f"model.backbone_lr_scale={scale}: must be > 0 (freeze with model.freeze_backbone_epochs)")
    if not 0 < optim.layer_decay <= 1:
        raise EmorecError(f"optim.layer_decay={optim.layer_decay}: must be in (0, 1] (1 turns it off)")
    groups = param_groups(model, optim.weight_decay, scale, optim.layer_decay)
    for group in groups:
        group["lr"] = optim.lr * group["lr_scale"]
    # fused: one kernel for all parameters instead of a loop over them (8 ms of a ~60 ms
    # head-only step on 2 CPU cores); needs every parameter on one CPU or CUDA device.
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = devices <= {"cpu"} or devices == {"cuda"}
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.momentum > 0,
                               fused=fused)
    return torch.optim.AdamW(groups, lr=optim.lr, fused=fused)


def steps_per_epoch_only(scheduler) -> bool:
    """True for a schedule stepped once per epoch with the validation metric (plateau), False for
    one stepped after every optimiser step (OneCycle)."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def build_plateau(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau on `train.monitor` (higher is better except for val_loss)."""
    optim = cfg.optim
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if cfg.train.monitor == "val_loss" else "max", factor=optim.plateau_factor,
        patience=optim.plateau_patience)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int,
                    epochs: int | None = None) -> torch.optim.lr_scheduler.LRScheduler:
    """`build_plateau` for `optim.schedule: plateau` (it has no length: the other arguments do not
    apply), else OneCycle over `epochs * steps_per_epoch` optimiser steps (`epochs` defaults to
    `train.epochs`; an extended run schedules only its new epochs), stepped once per optimiser
    step. `steps_per_epoch` counts optimiser steps, i.e. batches divided by
    `optim.accumulation_steps`, rounded up (the trainer passes exactly that).

    OneCycle divides by the length of its warm-up, so a warm-up of under 2 steps (a run of a
    few steps) is lengthened to 2, and the log says so."""
    optim = cfg.optim
    if optim.schedule == "plateau":
        return build_plateau(optimizer, cfg)
    if optim.max_lr < optim.lr:
        raise EmorecError(f"optim.max_lr={optim.max_lr} is below optim.lr={optim.lr}; the peak must be >= the "
                          "starting rate")
    if not 0.0 < optim.pct_start < 1.0:
        raise EmorecError(f"optim.pct_start={optim.pct_start}: the warm-up share must be in (0, 1)")
    if optim.final_div_factor <= 0:
        raise EmorecError(f"optim.final_div_factor={optim.final_div_factor}: must be > 0")
    epochs = int(cfg.train.epochs if epochs is None else epochs)
    total = max(4, epochs * max(1, int(steps_per_epoch)))
    pct_start = optim.pct_start
    if pct_start * total < 2:
        pct_start = 2.0 / total
        logging.getLogger("emorec").info(
            "schedule of %d steps: warm-up lengthened from optim.pct_start=%g to 2 steps", total, optim.pct_start)
    max_lrs = [optim.max_lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    if optim.schedule == "wsd":
        # A warm-up given in epochs is the same for runs of any length (a rung and the run after it).
        warmup = round(optim.warmup_epochs * max(1, int(steps_per_epoch))) if optim.warmup_epochs else round(pct_start * total)
        decay = max(1, round(optim.decay_pct * total))
        if warmup + decay > total:
            raise EmorecError(f"optim.decay_pct={optim.decay_pct}: a decay of {decay} steps after a warm-up of {warmup} "
                              f"does not fit a run of {total}; lower it or optim.warmup_epochs / optim.pct_start")
        return WarmupStableDecay(optimizer, max_lrs, total, warmup_steps=warmup, decay_steps=decay,
                                 start_div=optim.max_lr / optim.lr, final_div=optim.final_div_factor,
                                 anneal=optim.anneal_strategy)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lrs,
        total_steps=total,
        pct_start=pct_start,
        anneal_strategy=optim.anneal_strategy,
        div_factor=optim.max_lr / optim.lr,
        final_div_factor=optim.final_div_factor,
        cycle_momentum=False,
    )


class WarmupStableDecay(torch.optim.lr_scheduler.LRScheduler):
    """Per optimiser step: linear warm-up from peak / `start_div` over `warmup_steps`, the peak,
    then annealed (cosine or linear, like OneCycle's) over the last `decay_steps` of
    `total_steps`, reaching peak / `final_div` at the last one; stepped past its total it stays
    there. Like OneCycleLR it keeps `total_steps` in its state, so a resumed run whose length
    changed is resized the same way."""

    def __init__(self, optimizer, max_lrs: list[float], total_steps: int, *, warmup_steps: int, decay_steps: int,
                 start_div: float, final_div: float, anneal: str = "cos"):
        self.max_lrs, self.total_steps = list(max_lrs), int(total_steps)
        self.warmup_steps, self.decay_steps = int(warmup_steps), int(decay_steps)
        self.start_div, self.final_div, self.anneal = float(start_div), float(final_div), anneal
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The rate at `step` as a share of the peak."""
        if step < self.warmup_steps:
            start = 1.0 / self.start_div
            return start + (1.0 - start) * step / self.warmup_steps
        decay_from = self.total_steps - self.decay_steps
        if step < decay_from:
            return 1.0
        done = min(1.0, (step - decay_from) / max(1, self.decay_steps - 1))  # the floor at the last step, as OneCycle
        shape = (1 + math.cos(math.pi * done)) / 2 if self.anneal == "cos" else 1.0 - done
        end = 1.0 / self.final_div
        return end + (1.0 - end) * shape

    def get_lr(self) -> list[float]:
        return [peak * self.factor(self.last_epoch) for peak in self.max_lrs]
