"""The models `emorec fit` tries: a small grid, cheapest and most often best first.

Per feature set (one backbone's last-level or multi-level vectors, or every backbone's joined):
- the linear probe (logistic regression) at four regularisation strengths, scored by
  cross-validation over train + val (`crossval.py`); on small, balanced data it is the model to
  beat (benchmarks/RESULTS.md: 55.9 macro-F1 on Emotion6 against 54.0 for the recipe's head);
- heads trained by the one trainer on the cached views: linear, MLP (one hidden layer) and the
  recipe's attention + MLP, each with light and strong regularisation (weight decay, dropout,
  label smoothing, feature MixUp).
With several backbones, also the ensemble of each backbone's best probe (their logits averaged,
one linear head of the backbone group). After the grid, where the budget allows, an LP-FT
fine-tune of the best candidate (search.py decides when, and for how many epochs), and full
fine-tunes of each backbone on the images at two input sizes from the recipe `emorec demo` would
pick, run in rungs of successive halving (search.py, study.py; first on large data).
A candidate's id names its settings, so a resumed search knows which ones are done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Standardised vectors (1-9k columns) of about a thousand images want strong L2. Cross-validated
# over fold 0's train + val of bench_fit.py (lite0/1/2, 160 px), macro-F1 peaked at C = 0.001 for
# every backbone and both feature sets (0.0003 and 0.003 up to 1.7 points lower on the last level,
# 0.01 1-4 points lower, 0.1 lower still), so the grid brackets that peak.
LOGREG_C = (0.0003, 0.001, 0.003, 0.01)
HEAD_EPOCHS = 40
HEAD_PATIENCE = 10

# (head, regularisation) -> config overrides. Light: little weight decay, no MixUp. Strong:
# decoupled weight decay 0.05, more dropout, more label smoothing, MixUp on the vectors.
_LIGHT = ("optim.weight_decay=0.0001", "augment.mix_prob=0.0", "loss.label_smoothing=0.1")
_STRONG = ("optim.weight_decay=0.05", "augment.mix_prob=1.0", "augment.mixup_alpha=0.4", "loss.label_smoothing=0.2")
HEADS: dict[str, tuple[str, ...]] = {
    "linear": ("model.attention=false", "model.hidden_dims=[]", "model.dropout=[]", "loss.name=ce"),
    "mlp": ("model.attention=false", "model.hidden_dims=[512]", "loss.name=ce"),
    "attn_mlp": ("model.attention=true", "model.hidden_dims=[256,128,64]", "loss.name=focal"),
}
DROPOUT = {
    ("mlp", "light"): "[0.2]", ("mlp", "strong"): "[0.5]",
    ("attn_mlp", "light"): "[0.3,0.15,0.075]", ("attn_mlp", "strong"): "[0.5,0.3,0.15]",
}
HEAD_KINDS = ("logreg", *HEADS)
# The members' best probes averaged (ids: "ensemble-last-avg-logreg").
ENSEMBLE_TAG = "ensemble"
# LP-FT on images, after the head: the recipe's light augmentation, a tenth of the head's peak rate
# for the backbone's top stage and 0.7 less per stage below, pretrained BatchNorm statistics.
FINETUNE = ("train.head_only=false", "train.features_dir=null", "model.freeze_backbone_epochs=0",
            "model.backbone_lr_scale=0.1", "optim.layer_decay=0.7", "model.freeze_bn=auto", "optim.lr=3e-5",
            "optim.max_lr=3e-4", "augment.auto_augment=none", "augment.mix_prob=0.0", "augment.random_erasing=0.0",
            "train.ema=false", "train.patience=0")


@dataclass(frozen=True)
class FeatureSet:
    """Cached vectors of one backbone (`tag` names it in ids) at one levels / pooling setting."""

    tag: str
    backbone: str
    feature_levels: str
    pooling: str

    @property
    def name(self) -> str:
        return f"{self.tag}-{self.feature_levels}-{self.pooling}"


@dataclass
class Candidate:
    id: str
    kind: str  # logreg | ensemble | head | finetune
    features: FeatureSet
    head: str  # linear | mlp | attn_mlp
    settings: dict = field(default_factory=dict)  # what the leaderboard shows
    overrides: tuple[str, ...] = ()  # config overrides of a trainer run
    start_from: Path | None = None  # a fine-tune's starting run directory (its config.yaml is the base)
    recipe: Path | None = None  # a full fine-tune's config file (the base)

    def row(self) -> dict:
        return {"candidate": self.id, "kind": self.kind, "backbone": self.features.backbone,
                "feature_levels": self.features.feature_levels, "pooling": self.features.pooling,
                "head": self.head, **{k: self.settings.get(k, "") for k in SETTING_COLUMNS}}


SETTING_COLUMNS = ("C", "hidden_dims", "dropout", "weight_decay", "label_smoothing", "mixup", "epochs")


def _setting(overrides: tuple[str, ...], key: str, default: str = "") -> str:
    for o in overrides:
        if o.startswith(key + "="):
            return o.split("=", 1)[1]
    return default


def backbone_tag(name: str) -> str:
    """A short id-safe name: 'tf_efficientnet_lite0' -> 'tf_efficientnet_lite0', 'org/x:y' -> 'org_x_y'."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "backbone"


def grid(features: FeatureSet, heads: tuple[str, ...] = HEAD_KINDS, epochs: int = HEAD_EPOCHS) -> list[Candidate]:
    """The candidates for one feature set, in the order they are tried."""
    out: list[Candidate] = []
    if "logreg" in heads:
        for c in LOGREG_C:
            out.append(Candidate(f"{features.name}-logreg-C{c:g}", "logreg", features, "linear",
                                 {"C": c, "hidden_dims": "[]", "label_smoothing": 0.0, "mixup": 0}))
    for head in (h for h in HEADS if h in heads):
        for reg, extra in (("light", _LIGHT), ("strong", _STRONG)):
            overrides = (*HEADS[head], *extra, f"train.epochs={epochs}", f"train.patience={HEAD_PATIENCE}")
            if (head, reg) in DROPOUT:
                overrides += (f"model.dropout={DROPOUT[head, reg]}",)
            settings = {
                "hidden_dims": _setting(overrides, "model.hidden_dims"),
                "dropout": _setting(overrides, "model.dropout"),
                "weight_decay": float(_setting(overrides, "optim.weight_decay")),
                "label_smoothing": float(_setting(overrides, "loss.label_smoothing")),
                "mixup": int(float(_setting(overrides, "augment.mix_prob")) > 0), "epochs": epochs,
            }
            out.append(Candidate(f"{features.name}-{head}-{reg}", "head", features, head, settings, overrides))
    return out


def ensemble_candidate(features: FeatureSet, member_sets: list[str]) -> Candidate:
    """The ensemble, on the combined feature set `features`, of the best cross-validated probe of
    each of `member_sets` (the members' feature sets of the same variant)."""
    return Candidate(f"{ENSEMBLE_TAG}-{features.feature_levels}-{features.pooling}-logreg", "ensemble",
                     FeatureSet(ENSEMBLE_TAG, features.backbone, features.feature_levels, features.pooling), "linear",
                     {"hidden_dims": "[]", "label_smoothing": 0.0, "mixup": 0, "members": member_sets})


def finetune_candidate(leader: dict[str, str], start_from: Path) -> Candidate:
    """The LP-FT fine-tune of the leaderboard row `leader`, starting from its run directory; its
    overrides (`FINETUNE` and the epochs the budget allows) are the search's to add."""
    tag = leader["candidate"].split("-")[0]
    features = FeatureSet(tag, leader["backbone"], leader["feature_levels"], leader["pooling"])
    return Candidate(f"{leader['candidate']}-lpft", "finetune", features, leader["head"],
                     {k: leader.get(k, "") for k in ("C", "hidden_dims", "dropout", "weight_decay", "label_smoothing")},
                     start_from=start_from)


def full_finetune_candidate(choice, tag: str, size: int, recipe: Path) -> Candidate:
    """The full fine-tune of backbone `choice` (ids: "<tag>-full-<size>px") on the images at
    `size` px, from `recipe` (its augmentation, loss and rates); every layer trains from the
    first step. Its epochs are the search's to add (the longest rung's)."""
    features = FeatureSet(tag, choice.name, "-", "-")
    overrides = ("train.head_only=false", "train.features_dir=null", "model.init_from=null",
                 f"model.backbone={choice.name}", f"model.weights={choice.weights or 'null'}",
                 f"model.pretrained={str(choice.pretrained).lower()}", f"data.image_size={size}",
                 "model.freeze_backbone_epochs=0", "train.patience=0")
    return Candidate(f"{tag}-full-{size}px", "finetune", features, "recipe", {}, overrides, recipe=recipe)
