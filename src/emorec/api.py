"""The library entry points behind the CLI, for notebooks and scripts.

`train` is where head-only and full training part ways: head-only training needs a feature
cache, found (`train.features_dir`, or the cache `emorec features extract` would write for this
config) or extracted here, then handed to the one trainer. `fit` searches models within a time
budget (`emorec.fit`). `demo` is a short run of the recipe that suits the data
(configs/demo.yaml for photos, configs/faces.yaml for small grayscale faces); `check` pushes a few
real images through the pipeline.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emorec.config import Config, load_config
from emorec.errors import EmorecError
from emorec.training.recipes import DEMO_CONFIG, FACES_CONFIG, FACES_MAX_SIDE, FACES_MIN_GREY, looks_like_face_crops
from emorec.training.result import RunResult

# faces.yaml is sized for an hour; the demo trains 2 short epochs of it (2 x 60 batches of 64,
# 7,680 images, then 3,589 val images each) to end within 10 minutes on 2 busy cores.
FACES_DEMO_CAPS = ("train.epochs=2", "train.limit_train_batches=60")


@dataclass
class DemoRecipe:
    config: Path
    overrides: list[str]  # applied before the user's, which win
    reason: str


def pick_demo_recipe(data: str | Path) -> DemoRecipe:
    """configs/faces.yaml (capped to a short run) for small grayscale images, else configs/demo.yaml;
    decided on a sample of the dataset's files (`data.profile.profile_images`)."""
    from emorec.data.manifest import read_manifest
    from emorec.data.profile import profile_images

    profile = profile_images([s.path for s in read_manifest(str(data)).samples])
    if looks_like_face_crops(profile):
        return DemoRecipe(FACES_CONFIG, list(FACES_DEMO_CAPS),
                          f"small grayscale images ({profile.describe()}): the face recipe, "
                          f"{' '.join(FACES_DEMO_CAPS)}")
    return DemoRecipe(DEMO_CONFIG, [], f"photos ({profile.describe()}; faces.yaml is for <= {FACES_MAX_SIDE} px "
                                       f"and >= {FACES_MIN_GREY:.0%} grayscale)")


def feature_cache_for(cfg: Config, progress: bool = True):
    """The cache head-only training of `cfg` reads: `train.features_dir` if set, else the entry
    that `emorec features extract` with default settings keys for this data, backbone, weights,
    image size, feature levels and pooling under `features.DEFAULT_CACHE_ROOT`, extracted now
    (with progress) if missing."""
    from emorec.features.cache import DEFAULT_CACHE_ROOT, find_cache
    from emorec.features.extract import extract_features

    if cfg.train.features_dir:
        return find_cache(cfg.train.features_dir)
    if not cfg.data.source:
        raise EmorecError("head-only training needs data.source (to find or extract its features) or "
                          "train.features_dir; pass --set data.source=FOLDER_OR_CSV")
    return extract_features(cfg.data.source, backbone=cfg.model.backbone, weights=cfg.model.weights,
                            pretrained=cfg.model.pretrained, image_size=cfg.data.image_size,
                            cache_dir=DEFAULT_CACHE_ROOT, cfg=cfg, progress=progress,
                            feature_levels=cfg.model.feature_levels, pooling=cfg.model.pooling)


def train(cfg: Config, resume: str | Path | None = None) -> RunResult:
    """Train (or continue) one run; `cfg.train.head_only` trains the head on cached features."""
    import os

    from emorec.shards import torchrun_world_size
    from emorec.training.trainer import train as run_training

    if cfg.train.head_only and (torchrun_world_size(os.environ) or 1) > 1:
        # Refused before the extraction, which every rank would otherwise run into the same folder.
        raise EmorecError("head-only training runs in one process (it takes seconds to minutes); start it without "
                          "torchrun (`torchrun -m emorec features extract` builds its cache on several ranks first)")
    features = feature_cache_for(cfg) if cfg.train.head_only else None
    return run_training(cfg, resume, features=features)


def fit(source, output, budget="30m", backbones=None, **kwargs):
    """`emorec fit`: the best model for `source` within `budget`, chosen by validation macro-F1,
    probes by cross-validation over train + val, the candidates trials of an Optuna study in
    OUTPUT/study.db or `storage=URL` (`emorec.fit.search.fit`; keyword arguments as there)."""
    from emorec.fit import fit as run_fit

    return run_fit(source, output, budget, backbones, **kwargs)


def check(cfg: Config, num_images: int = 4) -> dict[str, Any]:
    """Build the model, push a few real images through the full pipeline, forward + backward."""
    from emorec.training.check import check_pipeline

    return check_pipeline(cfg, num_images)


def demo(data: str | Path | None, overrides: list[str] | None = None, config: str | Path | None = None) -> RunResult:
    """A short run on `data`: of `config` if given, else of the recipe `pick_demo_recipe` picks
    for the data (configs/demo.yaml for photos, a capped configs/faces.yaml for small grayscale
    faces); the choice and its reason are printed. Weights named relative to the repository
    (`../shared/weights/...`) are looked up from the current folder, then from the repository."""
    if not data:
        raise EmorecError("emorec demo needs a dataset: pass --data FOLDER_OR_CSV, e.g. "
                          "--data ../shared/datasets/emotion6 (or `make demo DATA=...`)")
    overrides = list(overrides or [])
    if config:
        recipe = DemoRecipe(Path(config), [], "given with --config")
    else:
        recipe = pick_demo_recipe(data)
    config = recipe.config
    if not config.is_file():
        raise EmorecError(f"demo config not found: {config}; pass --config configs/demo.yaml from the repository")
    print(f"demo recipe: {config.name}: {recipe.reason}", file=sys.stderr, flush=True)
    overrides = recipe.overrides + overrides
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
