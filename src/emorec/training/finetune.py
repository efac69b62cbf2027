"""Fine-tuning a pretrained backbone without destroying its features.

Three settings of the trainer, after LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution", ICLR 2022): a randomly initialised head sends
large gradients into the backbone and distorts the features before the head has learnt to use
them; fitting the head first (a linear probe, or `model.freeze_backbone_epochs`) and then
fine-tuning everything from it at a low backbone rate keeps them.

- `model.init_from`: start from another run's weights, e.g. a head-only run on cached features
  (LP-FT's probe), instead of a random head. The backbone then runs at `model.backbone_lr_scale`
  of the head's rate, as after unfreezing.
- `model.freeze_bn` (`batchnorm_frozen`): BatchNorm layers of the backbone in eval mode. The
  head was fitted on features normalised by the pretrained running statistics; letting small,
  augmented batches re-estimate them shifts every feature under the head at once (the demo's
  drop in validation macro-F1 the epoch the backbone was unfrozen). `auto` keeps them frozen for
  a pretrained backbone when the per-process batch is under 32 images (batch statistics of fewer
  images are noisy: Wu & He, "Group Normalization", ECCV 2018, Fig. 1) or when the run is LP-FT
  (`freeze_backbone_epochs > 0` or `init_from`); a random backbone always needs its statistics.
- `optim.layer_decay` (`optim.param_groups`): layer-wise learning-rate decay over the backbone's
  stages (timm's `group_matcher`), so early, generic stages move least.
"""

from __future__ import annotations

from pathlib import Path

import torch

from emorec.errors import EmorecError

# Batches below this many images per process give noisy BatchNorm statistics (Wu & He 2018).
SMALL_BATCH = 32


def starts_pretrained(cfg) -> bool:
    """The backbone's first weights are learnt ones: a local file, timm's hub weights or a run."""
    model = cfg.model
    return bool(model.weights or model.pretrained or model.init_from)


def is_lp_ft(cfg) -> bool:
    """The head is fitted (or starts fitted) before the backbone trains."""
    return cfg.model.freeze_backbone_epochs > 0 or bool(cfg.model.init_from)


def batchnorm_frozen(cfg) -> bool:
    """`model.freeze_bn` resolved: "true", "false", or the `auto` rule of the module docstring."""
    choice = cfg.model.freeze_bn
    if choice != "auto":
        return choice == "true"
    return starts_pretrained(cfg) and (cfg.data.batch_size < SMALL_BATCH or is_lp_ft(cfg))


def load_initial_weights(model: torch.nn.Module, path: str | Path, label_names: list[str], signature: dict) -> dict:
    """Load the model weights of the run or checkpoint `path` into `model` (`model.init_from`).
    Returns the checkpoint (its data_mean / data_std describe the backbone's preprocessing).
    One-line EmorecError when it is not a checkpoint of the same model and labels."""
    from emorec.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    where = ckpt["loaded_from"]
    if list(ckpt.get("label_map", [])) != list(label_names):
        raise EmorecError(f"model.init_from {where} was trained on labels {ckpt.get('label_map')} but the data has "
                          f"{list(label_names)}; start from a run on the same labels")
    theirs = ckpt.get("model_signature", {})
    diffs = [f"{k}: {theirs.get(k)!r} there, {v!r} here" for k, v in signature.items() if theirs.get(k) != v]
    if diffs:
        raise EmorecError(f"model.init_from {where} is another model ({'; '.join(diffs)}); set the model.* keys "
                          "to that run's (its config.yaml)")
    model.load_state_dict(ckpt["model"])
    return ckpt
