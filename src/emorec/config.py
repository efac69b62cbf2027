"""One typed configuration for a whole run: built once, saved with the run, passed down.

`Config` groups plain dataclasses (data, augment, model, loss, optim, train, eval). Defaults are
the high-accuracy recipe. `load_config(path, overrides)` reads YAML and applies `key=value`
overrides with dotted keys; unknown keys and wrong types raise `EmorecError` naming the key and
the valid choices, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
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
    backbone_lr_scale: float = 0.1  # backbone lr = head lr * this, after unfreezing


@dataclass
class LossConfig:
    name: Literal["focal", "ce", "combined"] = "focal"
    gamma: float = 2.0
    alpha: float = 0.25
    label_smoothing: float = 0.1
    class_weights: Literal["balanced", "none"] = "balanced"
    ce_weight: float = 0.5  # share of CE in `combined`


@dataclass
class OptimConfig:
    lr: float = 3e-4  # base lr: OneCycle starts at max_lr / (max_lr / lr)
    max_lr: float = 1e-3
    weight_decay: float = 1e-4
    pct_start: float = 0.1
    anneal_strategy: Literal["cos", "linear"] = "cos"
    final_div_factor: float = 1e3
    accumulation_steps: int = 2
    grad_clip: float = 1.0  # max global grad norm; 0 disables


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


@dataclass
class EvalConfig:
    tta: bool = True
    tta_hflip: bool = True
    tta_crops: int = 0  # extra crops (corners + centre style) on top of original and flip
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


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; convert the safe cases (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except EmorecError as e:
                errors.append(str(e))
        raise EmorecError(f"config key '{key}': expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and ("on" if value else "off") in choices:
            value = "on" if value else "off"  # YAML 1.1 reads a bare off / on as a boolean
        if value not in choices:
            raise EmorecError(f"config key '{key}': {value!r} is not valid; choose one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise EmorecError(f"config key '{key}': expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise EmorecError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise EmorecError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise EmorecError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
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
            if not isinstance(value, dict):
                raise EmorecError(f"config key '{key}': expected a mapping, got {value!r}")
            kwargs[f.name] = _build(tp, value, key + ".")
        else:
            kwargs[f.name] = _coerce(key, value, tp)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """Build a `Config` from nested plain data, validating every key and type."""
    return _build(Config, values or {}, "")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as YAML: 3 -> int, true -> bool, null -> None)."""
    if "=" not in text:
        raise EmorecError(f"override '{text}' is not key=value; write e.g. --set train.epochs=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise EmorecError(f"override '{text}' has an empty key; write e.g. --set train.epochs=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
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
        values = yaml.safe_load(path.read_text()) or {}
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
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
