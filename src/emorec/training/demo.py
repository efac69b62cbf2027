"""`emorec demo`: the short configs/demo.yaml run on a real dataset.

The demo config names pretrained weights relative to the repository
(`../shared/weights/...`); they are resolved against the current folder first and then
against the repository root, so `emorec demo` works from either.
"""

from __future__ import annotations

import time
from pathlib import Path

from emorec.config import load_config
from emorec.errors import EmorecError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def run_demo(data: str | Path | None, overrides: list[str] | None = None, config: str | Path | None = None):
    from emorec.training.trainer import train

    if not data:
        raise EmorecError("emorec demo needs a dataset: pass --data FOLDER_OR_CSV, e.g. "
                          "--data ../shared/datasets/emotion6 (or `make demo DATA=...`)")
    config = Path(config) if config else DEMO_CONFIG
    if not config.is_file():
        raise EmorecError(f"demo config not found: {config}; pass --config configs/demo.yaml from the repository")
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)
    cfg.data.source = str(data)
    if not any(o.split("=", 1)[0].strip() == "train.name" for o in overrides):
        cfg.train.name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"  # every demo gets its own run folder
    if cfg.model.weights and not Path(cfg.model.weights).is_absolute() and not Path(cfg.model.weights).exists():
        candidate = config.resolve().parent.parent / cfg.model.weights
        if not candidate.exists():
            raise EmorecError(f"demo weights not found: {cfg.model.weights} (also looked at {candidate}); "
                              "pass --set model.weights=PATH or model.weights=null model.pretrained=true")
        cfg.model.weights = str(candidate)
    return train(cfg)
