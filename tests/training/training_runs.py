"""Helpers for the trainer tests: tiny colour-coded image folders and tiny-run configs.

Runs use timm's `test_*` models at 32 px on CPU, deterministic, without loader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emorec.config import Config, load_config

CLASSES = ("amusement", "anger", "awe", "fear")
# Subprocesses run single-threaded too: the same thread count gives bit-identical sums.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two
    threads competing with other processes, and the results do not depend on the load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_images(root: Path, per_class: int = 20, size: int = 40, seed: int = 0) -> Path:
    """ImageFolder root/<label>/*.jpg; each class has its own dominant colour, so it is learnable."""
    rng = np.random.default_rng(seed)
    for c, label in enumerate(CLASSES):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        base = np.full(3, 40.0)
        base[c % 3] = 210
        if c == 3:
            base[:] = 200
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}_{i:03d}.jpg", quality=92)
    return root


def tiny_overrides(data: Path, output_dir: Path, name: str, *extra: str) -> list[str]:
    return [
        f"data.source={data}", "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
        "data.persistent_workers=false", "model.backbone=test_resnet", "model.pretrained=false",
        "model.hidden_dims=[16]", "model.dropout=[0.1]", "train.epochs=2", "train.deterministic=true",
        f"train.output_dir={output_dir}", f"train.name={name}", "augment.auto_augment=none", *extra,
    ]


def tiny_config(data: Path, output_dir: Path, name: str, *extra: str) -> Config:
    return load_config(None, tiny_overrides(data, output_dir, name, *extra))


def checkpoint_weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


SAME_RESULT_COLUMNS = ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                       "skipped_images", "bad_steps")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """16 images per class, shared by a test module's runs."""
    return make_images(tmp_path_factory.mktemp("data") / "images", per_class=16)


@pytest.fixture(scope="module")
def cache(data, tmp_path_factory):
    """A feature cache of `data` for head-only runs."""
    return extract_cache(data, tmp_path_factory.mktemp("features"))


def extract_cache(data: Path, cache_dir: Path, *extra: str):
    """Features of `data` (split as tiny_overrides splits it) from a random-init test backbone;
    `extra` overrides may set model.feature_levels and model.pooling."""
    from emorec.features.extract import extract_features

    cfg = tiny_config(data, cache_dir, "unused", *extra)
    return extract_features(str(data), "test_efficientnet", pretrained=False, image_size=32, augmented_views=2,
                            grid=0, cache_dir=cache_dir, cfg=cfg, num_workers=0, dtype="float32", progress=False,
                            log=lambda _m: None, feature_levels=cfg.model.feature_levels, pooling=cfg.model.pooling)


def head_only(cache) -> tuple[str, ...]:
    """Overrides that make a tiny run train the head on `cache`."""
    return ("train.head_only=true", f"train.features_dir={cache.root}")


def crash_in_epoch(monkeypatch, epoch: int) -> None:
    """Make the run die (like a killed machine) when epoch `epoch` starts."""
    import emorec.training.trainer as trainer

    real = trainer.train_one_epoch
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", dying)


def sigterm_at_step(monkeypatch, epoch: int, step: int) -> None:
    """Send this process a real SIGTERM after optimizer step `step` of epoch `epoch` (1-based)."""
    import os
    import signal

    import emorec.training.trainer as trainer

    real = trainer.train_one_epoch
    calls = []

    def signalling(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            inner, steps = kwargs["on_step"], []

            def on_step():
                inner()
                steps.append(1)
                if len(steps) == step:
                    os.kill(os.getpid(), signal.SIGTERM)

            kwargs["on_step"] = on_step
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", signalling)
