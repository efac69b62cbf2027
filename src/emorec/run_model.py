"""Load a trained run's model for inference: the model, its label map and its eval transform.

The checkpoint carries everything needed (config, label map, normalisation), so a model can be
rebuilt on a machine that has neither the training data nor the original pretrained weights.
Features, evaluation and serving all load runs this way; the module sits below them (it imports
data, models and checkpoint only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from emorec.config import Config, config_from_dict
from emorec.errors import EmorecError


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


def load_run_model(path: str | Path, device="cpu") -> LoadedModel:
    """Rebuild the model of a run directory (its best checkpoint, else the last), of a checkpoint
    file or of a built-in model's name, in eval mode on `device` (a name or `torch.device`)."""
    from emorec.checkpoint import load_checkpoint
    from emorec.data.labels import LabelMap
    from emorec.data.transforms import build_eval_transform
    from emorec.models.classifier import build_model
    from emorec.zoo.registry import resolve_model

    ckpt = load_checkpoint(resolve_model(path), map_location="cpu")
    checkpoint_path = Path(ckpt["loaded_from"])
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


def load_model(run_dir_or_ckpt: str | Path, device="cpu"):
    """(model, label_map, eval_transform): the contract in docs/ARCHITECTURE.md."""
    loaded = load_run_model(run_dir_or_ckpt, device)
    return loaded.model, loaded.label_map, loaded.transform
