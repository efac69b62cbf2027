"""One timm model as a backbone: built by name, its feature maps, and local weight files.

`create_timm_backbone` builds the timm model with no classifier and no pooling (`num_classes=0,
global_pool=""`), so `forward_features` keeps the spatial map the channel attention needs.
`feature_map` turns every timm output layout into (B, C, H, W): ViT-style token sequences
(B, N, C) lose their prefix tokens (class / register tokens) and become a patch grid, NHWC maps
are permuted.

Local weight files (.pth / .pt / .safetensors state dicts with timm's key names; torchvision's
ResNet files qualify, their names are timm's) are loaded by timm itself:
`timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=...))` runs the
model's own checkpoint filter (ViT position-embedding resampling, key renames of original
releases, ...) and drops the ImageNet classifier. emorec reads the file first (wrapped dicts,
DDP / emorec-checkpoint prefixes, clear errors) and checks afterwards what actually loaded,
refusing a file that does not fit: the user asked for pretrained features, and silently training
from random weights would cost a whole run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from emorec.errors import EmorecError

log = logging.getLogger("emorec.models")

# A weights file may hold at most this share of the backbone's parameters (by element count)
# unloaded before we call it a mismatch: a few absent buffers or a head-like extra are fine,
# a different architecture is not.
MAX_MISSING_FRACTION = 0.01
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_KEY_PREFIXES = ("module.", "backbone.", "model.", "encoder.")
_DATA_CONFIG_KEYS = ("mean", "std", "interpolation", "input_size", "crop_pct", "crop_mode")


class WeightsReport(NamedTuple):
    """What loading a weights file did: backbone keys the file lacked, file keys the backbone
    did not use (classifier keys excluded: they are dropped on purpose), and how many tensors
    loaded."""

    missing: list[str]
    unexpected: list[str]
    loaded: int


def create_timm_backbone(name: str, pretrained: bool = False, weights: str | Path | None = None,
                         drop_path_rate: float = 0.0) -> nn.Module:
    """One timm model without classifier or pooling; `weights` (a local file) wins over
    `pretrained` (timm's hub download). The model has `num_features` (channels of its map)."""
    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": ""}
    if drop_path_rate > 0:
        kwargs["drop_path_rate"] = drop_path_rate  # not every model takes it; only ask when used
    if weights is not None:
        return _create_with_weights(name, Path(weights), kwargs)[0]
    return _create(name, pretrained, kwargs)


def _create(name: str, download: bool, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=download, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise EmorecError(f"model.backbone '{name}' is not a timm model; pick one from timm.list_models(), "
                              "e.g. resnet50, efficientnet_b3, convnext_tiny") from None
        if download:
            raise EmorecError(f"could not fetch pretrained weights for '{name}' ({_first_line(e)}); set "
                              "model.weights to a local file or model.pretrained=false") from None
        raise
    except TypeError as e:
        raise EmorecError(f"model.backbone '{name}' does not accept model.drop_path_rate ({_first_line(e)}); "
                          "set model.drop_path_rate=0") from None
    except Exception as e:  # hub / network failures come in many types
        if not download:
            raise
        raise EmorecError(f"could not fetch pretrained weights for '{name}' ({type(e).__name__}: {_first_line(e)}); "
                          "set model.weights to a local file or model.pretrained=false") from None


def _create_with_weights(name: str, path: Path, kwargs: dict[str, Any]) -> tuple[nn.Module, WeightsReport]:
    """Build `name` with timm loading `path`; see the module docstring.

    timm loads non-strictly and does not say what it loaded, so a twin is built first from the
    same random seed without weights: a tensor that differs from its twin (or equals the file's
    tensor of the same name) was loaded, one that still equals its random init was not.
    """
    import timm

    state = _read_state_dict(path)
    seed = int(torch.randint(0, 2**62, ()))  # the caller's seed still decides the random init
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = _create(name, False, kwargs)
        init = twin.state_dict()
        state = _strip_prefixes(state, init)
        torch.manual_seed(seed)
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs)
        except Exception as e:  # noqa: BLE001 - shape errors, and checkpoint filters fail on foreign keys
            raise _mismatch(path, state, init, e) from None
    del twin
    # The overlay would keep every tensor of the file alive inside the model's config.
    model.pretrained_cfg.pop("state_dict", None)
    model.pretrained_cfg["file"] = str(path)
    report = _weights_report(model.state_dict(), init, state, _classifier_prefixes(model))
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    missing_elems = sum(params[k].numel() for k in report.missing if k in params)
    if not report.loaded or missing_elems > MAX_MISSING_FRACTION * total:
        raise EmorecError(f"weights file {path} does not fit this backbone: {report.loaded} of {len(init)} tensors "
                          f"loaded, {len(report.missing)} missing (e.g. {', '.join(report.missing[:3]) or '-'}); pick "
                          "the weights that match model.backbone")
    _apply_data_config(model, path.parent / "config.json")
    if report.missing:
        log.warning("weights %s: %d backbone tensors missing (kept random): %s", path, len(report.missing),
                    ", ".join(report.missing[:10]))
    if report.unexpected:
        log.warning("weights %s: %d tensors not used: %s", path, len(report.unexpected), ", ".join(report.unexpected[:10]))
    log.info("weights %s: loaded %d tensors", path, report.loaded)
    return model, report


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`model.forward_features(x)` as a (B, C, H, W) map, whatever layout the model emits."""
    return _as_map(model, model.forward_features(x), x.shape[-2:])


def timm_levels(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every stage of the timm model `model` as (B, C, H, W) maps, shallow first,
    in one pass (timm's `forward_intermediates`). The last entry is `feature_map(model, x)`
    itself: the deepest stage taken after the layers that follow it (EfficientNet's conv_head, a
    ViT's final norm), so the last level of the multi-level vector is the usual last-layer map."""
    forward = getattr(model, "forward_intermediates", None)
    if forward is None:
        raise EmorecError(f"backbone {type(model).__name__} cannot return its intermediate stages (no "
                          "forward_intermediates in timm); set model.feature_levels=last")
    final, intermediates = forward(x, intermediates_only=False)
    return [*intermediates[:-1], _as_map(model, final, x.shape[-2:])]


def timm_level_channels(model: nn.Module) -> list[int]:
    """Channels of each map `timm_levels` returns (timm's feature_info, the last one replaced by
    the backbone's `num_features`)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise EmorecError(f"backbone {type(model).__name__} lists no stages (no feature_info in timm); set "
                          "model.feature_levels=last")
    return [int(f["num_chs"]) for f in info][:-1] + [int(model.num_features)]


def _as_map(model: nn.Module, feats: torch.Tensor, image_hw) -> torch.Tensor:
    if feats.ndim == 3:
        return tokens_to_map(model, feats, image_hw)
    if feats.ndim == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC":
        return feats.permute(0, 3, 1, 2)
    return feats


def tokens_to_map(model: nn.Module, tokens: torch.Tensor, image_hw: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(B, N, C) ViT tokens -> (B, C, h, w): drop the prefix tokens, fold the patches to a grid."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    patches = tokens[:, prefix:]
    n = patches.shape[1]
    h = w = int(math.isqrt(n))
    embed = getattr(model, "patch_embed", None)
    if embed is not None and hasattr(embed, "dynamic_feat_size"):
        gh, gw = embed.dynamic_feat_size(tuple(image_hw))
        if gh * gw == n:
            h, w = gh, gw
    if h * w != n:
        raise ValueError(f"cannot fold {n} patch tokens into a grid")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def load_weights(model: nn.Module, path: str | Path) -> WeightsReport:
    """Load a local weights file into the timm backbone `model` (built by `create_timm_backbone`).

    The file goes through timm's loader for the model's architecture, as in `create_timm_backbone`;
    the tensors that loaded are copied into `model`, the rest keep its values. Raises
    `EmorecError` naming the file when it cannot be read, when a tensor has the wrong shape, or
    when the backbone would stay (mostly) random. Missing and unexpected keys are logged and
    returned. A `config.json` beside the file (timm's pretrained cfg) sets the model's
    preprocessing (mean, std, interpolation, input size).
    """
    path = Path(path)
    name = getattr(model, "pretrained_cfg", {}).get("architecture")
    if not name:
        raise EmorecError(f"cannot load {path}: the model is not a timm model (no pretrained_cfg architecture)")
    loaded, report = _create_with_weights(name, path, {"num_classes": 0, "global_pool": ""})
    keep = set(model.state_dict()) - set(report.missing)
    model.load_state_dict({k: v for k, v in loaded.state_dict().items() if k in keep}, strict=False)
    _apply_data_config(model, path.parent / "config.json")
    return report


def backbone_data_config(model: nn.Module) -> dict[str, Any]:
    """The preprocessing the backbone's weights expect: mean, std, interpolation, input_size
    (and crop_pct), from timm's pretrained cfg, updated by `load_weights` from a local
    config.json (EfficientNet-Lite weights want mean = std = 0.5, not ImageNet's)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return {
        "mean": tuple(cfg["mean"]),
        "std": tuple(cfg["std"]),
        "interpolation": cfg["interpolation"],
        "input_size": tuple(cfg["input_size"]),
        "crop_pct": cfg.get("crop_pct"),
    }


# -- helpers ---------------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise EmorecError(f"weights file not found: {path}; set model.weights to an existing .pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EmorecError(f"weights file {path} could not be read ({_first_line(e)}); pass a .pth, .pt or "
                          ".safetensors state dict") from None
    # Training scripts wrap the state dict: {'state_dict': ...}, {'model': ...}, ...
    for _ in range(3):
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise EmorecError(f"weights file {path} holds no state dict of tensors; pass a .pth, .pt or .safetensors "
                          "state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _strip_prefixes(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """File keys renamed to the backbone keys they stand for: as is, or without wrapper prefixes
    (DDP's 'module.', an emorec checkpoint's 'backbone.', ...). Keys that match nothing are kept
    as they are: timm's checkpoint filter may know them (original releases' names)."""
    out = {}
    for key, tensor in state.items():
        candidate = key
        while candidate not in own:
            prefix = next((p for p in _KEY_PREFIXES if candidate.startswith(p)), None)
            if prefix is None:
                break
            candidate = candidate[len(prefix):]
        out[candidate if candidate in own else key] = tensor
    return out


def _mismatch(path: Path, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], error: Exception) -> EmorecError:
    """One line for a file timm could not load: the first tensor of the wrong shape, if any."""
    for key, tensor in state.items():
        if key in own and tuple(tensor.shape) != tuple(own[key].shape):
            return EmorecError(f"weights file {path}: tensor '{key}' has shape {tuple(tensor.shape)} but the backbone "
                               f"expects {tuple(own[key].shape)}; the file is for another model, pick the weights that "
                               "match model.backbone")
    return EmorecError(f"weights file {path} does not fit this backbone ({type(error).__name__}: "
                       f"{' '.join(_first_line(error).split())[:200]}); pick the weights that match model.backbone")


def _weights_report(got: dict[str, torch.Tensor], init: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                    classifier: tuple[str, ...]) -> WeightsReport:
    """Which backbone tensors loaded (changed from the random init, or equal to the file's
    tensor of that name: a fresh BatchNorm is all ones and zeros) and which file keys went unused."""
    loaded, missing = [], []
    for key, value in got.items():
        supplied = state.get(key)
        same_as_file = (supplied is not None and supplied.shape == value.shape
                        and torch.equal(supplied.to(value.dtype), value))
        if same_as_file or not torch.equal(value, init[key]):
            loaded.append(key)
        elif not key.endswith("num_batches_tracked"):
            missing.append(key)
    # Unused file keys can be told by name only when timm's filter renamed nothing, i.e. when
    # every loaded tensor came from a file key of the same name.
    renamed = any(key not in state for key in loaded)
    unexpected = [] if renamed else [
        k for k in state if k not in got and not any(k.startswith(p) for p in classifier)
    ]
    return WeightsReport(missing, unexpected, len(loaded))


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the ImageNet classifier this architecture had (timm's pretrained cfg names
    it: 'fc' for ResNet, 'classifier' for EfficientNet, 'head.fc' for ConvNeXt...)."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    prefixes = {f"{n}." for n in names} | {"fc.", "classifier.", "head.fc.", "head."}
    for prefix in list(prefixes):
        prefixes |= {f"backbone.{prefix}", f"model.{prefix}"}
    return tuple(prefixes)


def _apply_data_config(model: nn.Module, config_path: Path) -> None:
    if not config_path.is_file():
        return
    try:
        values = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EmorecError(f"{config_path} is not valid JSON ({_first_line(e)}); fix or remove it (it sets the "
                          "weights' mean, std and input size)") from None
    update = {k: values[k] for k in _DATA_CONFIG_KEYS if k in values}
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg.update(update)
    model.pretrained_cfg = cfg
    log.info("preprocessing from %s: %s", config_path, update)
