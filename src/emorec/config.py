"""One typed configuration for a whole run: built once, saved with the run, passed down.

`Config` groups plain dataclasses (data, augment, model, loss, optim, train, eval). Defaults are
the high-accuracy recipe. `load_config(path, overrides)` reads YAML and applies `key=value`
overrides with dotted keys, then `validate_config` checks every value before anything is written:
unknown keys, wrong types, values outside `RANGES` / `PATTERNS` and inconsistent pairs raise a
one-line `EmorecError` naming the key, the value and what is expected, so a typo never silently
falls back to a default and a bad value never reaches the middle of a run.

YAML 1.1 guesses a scalar's type from its look (`3e-4` is a string, `2024` an int, `2024-05-01` a
date, `no` a boolean); here only `null` is guessed and the dataclass annotation decides the rest,
so `lr: 3e-4` is a float and `name: 2024` the string "2024", in files and `--set` alike.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from emorec.errors import EmorecError


@dataclass
class DataConfig:
    source: str | None = None  # folder (ImageFolder / <label>_*.jpg) or CSV manifest
    images_root: str | None = None  # base for relative CSV paths (default: the CSV's folder)
    image_size: int = 224
    batch_size: int = 32
    num_workers: int = 2
    val_fraction: float = 0.1
    test_fraction: float = 0.1  # 80/10/10: the 17,149 / 2,145 / 2,145 split of the recipe
    split_seed: int = 42
    weighted_sampling: bool = True
    # Weighted sampling draws class c with probability ~ count_c ** (1 - sampling_power): 1 draws
    # every class equally often, 0.5 splits the balancing with the loss's class weights (which
    # then correct only what the sampler left), so rare images are repeated ~sqrt as often.
    sampling_power: float = 0.5
    pin_memory: bool = True
    persistent_workers: bool = True
    cache_dir: str | None = None  # pre-resized copy written by `emorec data cache`


@dataclass
class AugmentConfig:
    # Where the training augmentation runs: `pil` per image in the loader workers; `tensor` in
    # batches on the training device (workers only decode and resize; data/batch_augment.py).
    backend: Literal["pil", "tensor"] = "pil"
    scale_min: float = 0.5  # RandomResizedCrop lower scale: emotion cues are often global
    hflip: float = 0.5
    rotation: float = 15.0  # degrees
    color_jitter: float = 0.3  # brightness / contrast / saturation; hue gets a tenth of it
    perspective: float = 0.2  # distortion scale
    perspective_p: float = 0.3
    auto_augment: Literal["autoaugment", "randaugment", "trivialaugment", "none"] = "autoaugment"
    random_erasing: float = 0.25  # probability
    mixup_alpha: float = 0.4
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0  # chance a batch is mixed at all
    switch_prob: float = 0.5  # chance a mixed batch uses CutMix instead of MixUp


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    pretrained: bool = True
    weights: str | None = None  # local .pth / .safetensors; wins over `pretrained`
    attention: bool = True
    attention_reduction: int = 16
    hidden_dims: list[int] = field(default_factory=lambda: [1024, 512, 256])
    dropout: list[float] = field(default_factory=lambda: [0.3, 0.15, 0.075])
    activation: Literal["relu", "gelu", "silu"] = "gelu"
    drop_path_rate: float = 0.0
    freeze_backbone_epochs: int = 0
    # backbone lr = head lr * this, after unfreezing (or from the start with init_from: LP-FT)
    backbone_lr_scale: float = 0.1
    # BatchNorm of the backbone in eval mode (running statistics kept) while it trains. auto: on
    # for a pretrained backbone when the per-process batch is under 32 or the run is LP-FT
    # (training/finetune.py says why).
    freeze_bn: Literal["auto", "true", "false"] = "auto"
    # Features the head reads: the last feature map only, or every stage of the backbone
    # (multi-level: colour and texture cues live in early stages), each pooled by `pooling`.
    feature_levels: Literal["last", "all"] = "last"
    pooling: Literal["avg", "meanstd", "gem"] = "avg"  # meanstd: mean and std per channel; gem: p=3
    init_from: str | None = None  # run dir / checkpoint whose weights start this run (LP-FT)


@dataclass
class LossConfig:
    name: Literal["focal", "ce", "combined"] = "focal"
    gamma: float = 2.0
    alpha: float = 0.25
    label_smoothing: float = 0.1
    class_weights: Literal["balanced", "none"] = "balanced"
    ce_weight: float = 0.5  # `combined` = focal + ce_weight * cross-entropy


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"  # sgd: Nesterov momentum (training/optim.py)
    momentum: float = 0.9  # SGD only
    # onecycle: per optimiser step from lr up to max_lr and down; wsd: up to max_lr, held there,
    # down over the last decay_pct of the steps; plateau: lr, times plateau_factor whenever
    # train.monitor has not improved for plateau_patience epochs
    schedule: Literal["onecycle", "wsd", "plateau"] = "onecycle"
    decay_pct: float = 0.2  # wsd only
    warmup_epochs: float = 0.0  # wsd only; 0: pct_start of the run
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    lr: float = 3e-4  # base lr: OneCycle starts at max_lr / (max_lr / lr); plateau's starting lr
    max_lr: float = 1e-3
    weight_decay: float = 1e-4
    pct_start: float = 0.1
    anneal_strategy: Literal["cos", "linear"] = "cos"
    final_div_factor: float = 1e3
    accumulation_steps: int = 2
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    # Layer-wise lr decay (BEiT, Bao et al. 2022): each backbone stage below the top one learns
    # at this times the rate of the stage above it; 1 turns it off.
    layer_decay: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 80
    seed: int = 42
    deterministic: bool = False
    output_dir: str = "runs"
    name: str = "emorec"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on CUDA, off on CPU
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    monitor: Literal["val_macro_f1", "val_accuracy", "val_loss"] = "val_macro_f1"
    patience: int = 20
    sync_batchnorm: bool = False
    max_bad_steps: int = 10  # consecutive non-finite losses before the run stops
    checkpoint_every_steps: int = 0  # 0: only at epoch end (and on interruption)
    head_only: bool = False  # train attention + head on cached frozen features (issue 7)
    features_dir: str | None = None
    limit_train_batches: int = 0  # 0: all; >0 caps each epoch (smoke runs, tests)
    time_limit_s: float = 0.0  # 0: none; >0 ends this invocation's training after that many seconds
    # 0: train.epochs; >0 ends this invocation after that epoch, the schedule still planned for
    # train.epochs (a rung of emorec fit's successive halving; --resume goes on)
    stop_after_epoch: int = 0


@dataclass
class EvalConfig:
    tta: bool = True
    tta_hflip: bool = True
    tta_crops: int = 0  # extra crops (corners + centre style) on top of original and flip
    # views: original + tta_hflip + tta_crops zoomed crops; ten-crop: centre and corner crops of the
    # resized image and their mirrors (FER's standard TTA; evaluation/tta.py)
    tta_mode: Literal["views", "ten-crop"] = "views"
    batch_size: int = 64


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir) / self.train.name


# The valid values of every int and float field, in interval notation: "[" and "]" include the
# bound, "(" and ")" exclude it, inf leaves that side open. A list field's range holds for each
# item. Every number field is listed (tests/test_config.py checks), so a new one must decide here.
RANGES: dict[str, str] = {
    "data.image_size": "[16, inf)",  # the smallest input `emorec features extract` accepts too
    "data.batch_size": "[1, inf)",
    "data.num_workers": "[0, inf)",
    "data.val_fraction": "[0, 1)",  # and val + test < 1, so images remain to train on
    "data.test_fraction": "[0, 1)",
    "data.split_seed": "[0, 4294967295]",  # numpy's seed range
    "data.sampling_power": "[0, 1]",
    "augment.scale_min": "(0, 1]",  # RandomResizedCrop's smallest area share; 0 allows empty crops
    "augment.hflip": "[0, 1]",
    "augment.rotation": "[0, 180]",  # degrees either way
    "augment.color_jitter": "[0, inf)",
    "augment.perspective": "[0, 1]",  # torchvision's distortion_scale
    "augment.perspective_p": "[0, 1]",
    "augment.random_erasing": "[0, 1]",
    "augment.mixup_alpha": "[0, inf)",  # Beta(alpha, alpha); 0 turns that kind of mixing off
    "augment.cutmix_alpha": "[0, inf)",
    "augment.mix_prob": "[0, 1]",
    "augment.switch_prob": "[0, 1]",
    "model.attention_reduction": "[1, inf)",
    "model.hidden_dims": "[1, inf)",
    "model.dropout": "[0, 1)",  # and one rate per hidden layer
    "model.drop_path_rate": "[0, 1)",
    "model.freeze_backbone_epochs": "[0, inf)",
    # 0 would leave the backbone untrained after unfreezing (optim.py refuses it then); a backbone
    # that never trains is freeze_backbone_epochs >= train.epochs.
    "model.backbone_lr_scale": "(0, inf)",
    "loss.gamma": "[0, inf)",  # 0: no focusing, i.e. cross-entropy
    "loss.alpha": "(0, 1]",  # the focal term's scale; 1 (what cross-entropy uses) leaves it unscaled
    "loss.label_smoothing": "[0, 1)",
    "loss.ce_weight": "[0, inf)",
    "optim.momentum": "[0, 1)",
    "optim.plateau_factor": "(0, 1)",  # 1 would never lower the rate
    "optim.plateau_patience": "[0, inf)",
    "optim.lr": "(0, inf)",
    "optim.max_lr": "(0, inf)",  # and >= optim.lr with OneCycle, which rises from lr to max_lr
    "optim.weight_decay": "[0, inf)",
    "optim.pct_start": "(0, 1)",  # OneCycle's warm-up share of the steps
    "optim.decay_pct": "(0, 1)",  # wsd's decay share of the steps
    "optim.warmup_epochs": "[0, inf)",
    "optim.final_div_factor": "(0, inf)",
    "optim.accumulation_steps": "[1, inf)",
    "optim.grad_clip": "[0, inf)",  # 0 disables clipping
    "optim.layer_decay": "(0, 1]",  # 1: every backbone stage at the same rate
    "train.epochs": "[1, inf)",
    "train.seed": "[0, 4294967295]",
    "train.ema_decay": "(0, 1)",
    "train.patience": "[0, inf)",  # 0 never stops early
    "train.max_bad_steps": "[1, inf)",
    "train.checkpoint_every_steps": "[0, inf)",  # 0: only at epoch end
    "train.limit_train_batches": "[0, inf)",  # 0: every batch
    "train.time_limit_s": "[0, inf)",  # 0: no limit
    "train.stop_after_epoch": "[0, inf)",  # 0: train.epochs
    # data.views.CROP_ANCHORS holds the centre and four corners; more crops repeat views.
    "eval.tta_crops": "[0, 5]",
    "eval.batch_size": "[1, inf)",
}

# Every string must be non-empty (an optional one is unset with null); these must also match.
PATTERNS: dict[str, tuple[str, str]] = {
    "train.name": (r"(?!\.\.?$)[^/\\]+", "a folder name without / or \\ (and not . or ..)"),
    "train.device": (r"auto|cpu|mps|cuda(:[0-9]+)?", "auto, cpu, mps, cuda or cuda:N"),
}

_INTERVAL = re.compile(r"([\[(])(\S+), (\S+)([\])])")
_INT_TEXT = re.compile(r"[-+]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_BOOL_TEXT = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader guessing only null: numbers, booleans and dates stay text, typed later by
    the field's annotation (YAML 1.1 would make `3e-4` a string and `2024` an int)."""


_GUESSED = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp")}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _GUESSED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(key: str, value: Any, tp: Any, text: bool = True) -> Any:
    """Check `value` against the annotation `tp` and return it typed (int -> float). With `text`,
    values written as text (YAML, --set) are read by the annotation: '3e-4' for a float, 'on' for a
    bool, and an int is taken as its digits for a string."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(key, value, arg, text)
                except EmorecError:
                    pass
        raise EmorecError(f"config key '{key}': expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if not isinstance(value, str) or value not in choices:
            raise EmorecError(f"config key '{key}': {value!r} is not valid; choose one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise EmorecError(f"config key '{key}': expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp, text) for i, v in enumerate(value)]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    is_text = text and isinstance(value, str)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if is_text and value.lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.lower()]
        raise EmorecError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if is_number and isinstance(value, int):
            return value
        if is_text and _INT_TEXT.fullmatch(value):
            return int(value)
        raise EmorecError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if is_number:
            return float(value)
        if is_text and _FLOAT_TEXT.fullmatch(value):
            return float(value)
        raise EmorecError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if text and is_number and isinstance(value, int):
            return str(value)
        raise EmorecError(f"config key '{key}': expected a string, got {value!r}")
    raise TypeError(f"unsupported config annotation for {key}: {tp}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            where = f"{prefix}{key}"
            raise EmorecError(
                f"unknown config key '{where}'; valid keys here: {', '.join(prefix + k for k in sorted(known))}"
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        tp = hints[f.name]
        value = values[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            value = {} if value is None else value  # a YAML section with every key commented out
            if not isinstance(value, dict):
                raise EmorecError(f"config key '{key}': expected a mapping, got {value!r}")
            kwargs[f.name] = _build(tp, value, key + ".")
        else:
            kwargs[f.name] = _coerce(key, value, tp)
    return cls(**kwargs)


def _fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, value, annotation) of every leaf field of the dataclass `obj`."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key, value, tp = f"{prefix}{f.name}", getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise EmorecError(f"config section '{key}': expected a {tp.__name__}, got {value!r}")
            yield from _fields(value, key + ".")
        else:
            yield key, value, tp


def _describe(interval: str) -> str:
    low_closed, low, high, high_closed = _INTERVAL.fullmatch(interval).groups()
    if high == "inf":
        return f"{'>=' if low_closed == '[' else '>'} {low}"
    return f"a value in {interval}"


def _within(value: float, interval: str) -> bool:
    low_closed, low, high, high_closed = _INTERVAL.fullmatch(interval).groups()
    above = value >= float(low) if low_closed == "[" else value > float(low)
    below = value <= float(high) if high_closed == "]" else value < float(high)
    return above and below  # NaN is neither


def _check_value(key: str, value: Any) -> None:
    if key in RANGES:
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if not _within(item, RANGES[key]):
                where = key if i is None else f"{key}[{i}]"
                raise EmorecError(f"config key '{where}': expected {_describe(RANGES[key])}, got {item!r}")
    elif isinstance(value, str):
        if not value.strip():
            raise EmorecError(f"config key '{key}': expected a non-empty string (null where it is optional), "
                              f"got {value!r}")
        if key in PATTERNS and not re.fullmatch(PATTERNS[key][0], value):
            raise EmorecError(f"config key '{key}': expected {PATTERNS[key][1]}, got {value!r}")


def _check_pairs(cfg: Config) -> None:
    """The rules that tie two keys together."""
    data, model, optim = cfg.data, cfg.model, cfg.optim
    if optim.schedule in ("onecycle", "wsd") and optim.max_lr < optim.lr:
        raise EmorecError(f"config key 'optim.max_lr': expected >= optim.lr ({optim.lr}), the rate "
                          f"{'OneCycle' if optim.schedule == 'onecycle' else 'warmup-stable-decay'} starts from, got "
                          f"{optim.max_lr}")
    if len(model.dropout) != len(model.hidden_dims):
        raise EmorecError(f"config key 'model.dropout': expected one rate per model.hidden_dims entry "
                          f"({len(model.hidden_dims)}: {model.hidden_dims}), got {model.dropout}")
    if data.val_fraction + data.test_fraction >= 1:
        raise EmorecError(f"config key 'data.test_fraction': expected data.val_fraction + data.test_fraction < 1 "
                          f"(images must remain for training), got {data.test_fraction} with data.val_fraction "
                          f"{data.val_fraction}")


def validate_config(cfg: Config) -> Config:
    """Check every value of `cfg`: its type, `RANGES`, `PATTERNS` and the rules tying keys together.
    Returns `cfg` itself or raises a one-line `EmorecError`; call it again after changing a loaded
    config (`dataclasses.replace`, setting a field)."""
    if not isinstance(cfg, Config):
        raise EmorecError(f"expected an emorec Config, got {type(cfg).__name__}")
    for key, value, tp in _fields(cfg):
        _check_value(key, _coerce(key, value, tp, text=False))
    _check_pairs(cfg)
    return cfg


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """Build a `Config` from nested plain data, validating every key, type and value."""
    return validate_config(_build(Config, values or {}, ""))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value read as YAML that guesses only null: '3e-4', 'true' and
    '2024' stay text for the field's annotation to type, '[1, 2]' is a list, 'null' None)."""
    if "=" not in text:
        raise EmorecError(f"override '{text}' is not key=value; write e.g. --set train.epochs=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise EmorecError(f"override '{text}' has an empty key; write e.g. --set train.epochs=10")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of nested `values` with each `key=value` override set."""
    import copy

    out = copy.deepcopy(values)
    for text in overrides or []:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise EmorecError(f"override '{text}': '{p}' is not a section")
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EmorecError(f"config file not found: {path}; pass an existing YAML file, e.g. configs/high_accuracy.yaml")
    try:
        values = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EmorecError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}); fix the syntax")
    if not isinstance(values, dict):
        raise EmorecError(f"config file {path} must hold a mapping of sections (data:, model:, ...)")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then `key=value` overrides, validated."""
    values = read_yaml(path) if path else {}
    return config_from_dict(apply_overrides(values, overrides))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write `cfg` as YAML, checked first: a run folder never holds a config `load_config` refuses."""
    Path(path).write_text(yaml.safe_dump(validate_config(cfg).to_dict(), sort_keys=False))
