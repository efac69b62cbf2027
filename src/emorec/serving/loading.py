"""Load a trained model for inference from a run directory or a checkpoint file.

The checkpoint carries everything needed (config, label map, normalisation), so a model can be
rebuilt on a machine that has neither the training data nor the original pretrained weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from emorec.config import Config, config_from_dict
from emorec.errors import EmorecError

CHECKPOINT_FORMAT = "emorec-checkpoint"


@dataclass
class LoadedModel:
    """A model ready for inference plus what is needed to feed it and name its outputs."""

    model: "torch.nn.Module"  # noqa: F821 (torch is imported lazily)
    label_map: "LabelMap"  # noqa: F821
    transform: object  # torchvision eval transform: PIL image -> normalised tensor
    cfg: Config
    mean: list[float]
    std: list[float]
    checkpoint_path: Path
    epoch: int | None

    @property
    def image_size(self) -> int:
        return self.cfg.data.image_size


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory -> its best checkpoint (EMA weights when on), else the last one."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt", path / "best.pt", path / "last.pt"):
            if candidate.is_file():
                return candidate
        raise EmorecError(f"no checkpoint in run directory {path}; expected checkpoints/best.pt or checkpoints/last.pt from `emorec train`")
    raise EmorecError(f"model not found: {path}; pass a run directory, a .pt checkpoint or an exported .onnx file")


def load_run_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Rebuild the model of a run (or checkpoint file) in eval mode on `device`."""
    from emorec.data.labels import LabelMap
    from emorec.data.transforms import build_eval_transform
    from emorec.models.classifier import build_model
    from emorec.training.checkpoint import load_checkpoint

    checkpoint_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(checkpoint_path, map_location="cpu")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise EmorecError(f"{checkpoint_path} is not an emorec checkpoint (no format '{CHECKPOINT_FORMAT}'); pass a file written by `emorec train`")
    cfg = config_from_dict(ckpt["config"])
    label_map = LabelMap(list(ckpt["label_map"]))
    # The state dict replaces every weight, so never fetch or read the pretrained backbone again:
    # the serving machine may have neither internet nor the original weights file.
    model_cfg = dataclasses.replace(cfg.model, pretrained=False, weights=None)
    model = build_model(model_cfg, len(label_map))
    try:
        result = model.load_state_dict(ckpt["model"], strict=False)
        problem = (
            f"{len(result.missing_keys)} missing and {len(result.unexpected_keys)} unexpected weights, "
            f"e.g. {(result.missing_keys + result.unexpected_keys)[0]}"
            if result.missing_keys or result.unexpected_keys else None
        )
    except RuntimeError as e:  # shape mismatches
        problem = " ".join(str(e).split())[:300]
    if problem:
        raise EmorecError(f"checkpoint {checkpoint_path} does not fit the model its config describes ({problem}); the file may be from another emorec version")
    model.eval().to(device)
    mean, std = list(ckpt["data_mean"]), list(ckpt["data_std"])
    transform = build_eval_transform(cfg, mean, std)
    return LoadedModel(model, label_map, transform, cfg, mean, std, checkpoint_path, ckpt.get("epoch"))


def load_model(run_dir_or_ckpt: str | Path, device: str = "cpu"):
    """(model, label_map, eval_transform): the contract in docs/ARCHITECTURE.md."""
    loaded = load_run_model(run_dir_or_ckpt, device)
    return loaded.model, loaded.label_map, loaded.transform


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EmorecError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return name
