"""Build a small but complete run directory without training, in the documented layout.

Fast stand-in for `emorec train` in evaluation and serving tests: a randomly initialised tiny
model saved as an emorec checkpoint, plus manifest.csv, label_map.json, metrics.csv and
summary.json as docs/ARCHITECTURE.md describes them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from emorec.config import config_from_dict

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def tiny_config(image_size: int = 32, tta_crops: int = 1, backbone: str = "test_resnet"):
    return config_from_dict({
        "data": {"image_size": image_size, "num_workers": 0, "batch_size": 8},
        "model": {"backbone": backbone, "pretrained": False, "hidden_dims": [16], "dropout": [0.0]},
        "eval": {"batch_size": 8, "tta": True, "tta_hflip": True, "tta_crops": tta_crops},
    })


def make_run(run_dir: Path, dataset: Path, image_size: int = 32, tta_crops: int = 1, seed: int = 0,
             backbone: str = "test_resnet") -> Path:
    """A run dir over an ImageFolder `dataset`: every 3rd image test, every 3rd + 1 val."""
    from emorec.models.classifier import build_model

    cfg = tiny_config(image_size, tta_crops, backbone)
    names = sorted(d.name for d in dataset.iterdir() if d.is_dir())
    (run_dir / "checkpoints").mkdir(parents=True)
    with (run_dir / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for label in names:
            for i, image in enumerate(sorted((dataset / label).iterdir())):
                writer.writerow([str(image.resolve()), label, ("test", "val", "train")[i % 3]])
    (run_dir / "label_map.json").write_text(json.dumps({"names": names}))
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                         "skipped_images", "bad_steps", "images_per_s", "epoch_seconds"])
        for epoch in (1, 2, 3):
            writer.writerow([epoch, 1e-3 / epoch, 1.5 / epoch, 0.3 * epoch, 1.6 / epoch, 0.25 * epoch, 0.2 * epoch, 0, 0, 100, 2.0])
    (run_dir / "summary.json").write_text(json.dumps({"epochs_completed": 3, "best_epoch": 3, "wall_time_s": 6.0, "params": {"total": 1}}))
    torch.manual_seed(seed)
    model = build_model(cfg.model, len(names)).eval()
    checkpoint = {
        "format": "emorec-checkpoint", "format_version": 1, "model": model.state_dict(), "ema": None,
        "epoch": 3, "step": 30, "config": cfg.to_dict(), "label_map": names, "model_signature": {},
        "versions": {}, "best_metric": 0.6, "data_mean": IMAGENET_MEAN, "data_std": IMAGENET_STD,
    }
    torch.save(checkpoint, run_dir / "checkpoints" / "best.pt")
    return run_dir


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test with one intra-op thread, then restore the setting.

    Tiny models gain nothing from more threads, and with `pytest -n 2` on two cores the extra
    OpenMP threads oversubscribe the CPU: one tiny training epoch measured 30 s with 2 threads
    against 1 s with 1 on the shared development machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
