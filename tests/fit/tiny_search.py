"""What the search tests share: a tiny, fast `fit` (32 px, a random test backbone, one C for the
probe, the feature cache in the test's own folder) on 12 images per class, and its leaderboard."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from emorec.fit import BackboneChoice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import make_images  # noqa: E402

TINY = dict(image_size=32, views=1, head_epochs=2, workers=0, progress=False, log=lambda _m: None, device="cpu")
BACKBONE = [BackboneChoice("test_efficientnet", None, pretrained=False)]


def two_backbones_with_weights(folder: Path) -> list[BackboneChoice]:
    """Two different random test backbones saved as weight files: backbones with weights, so
    their feature sets are joined and their probes ensembled (random ones are not)."""
    import torch

    from emorec.models.backbone import create_backbone

    choices = []
    for i, name in enumerate(("test_efficientnet", "test_efficientnet_ln")):
        torch.manual_seed(i)
        path = folder / f"{name}.pth"
        torch.save(create_backbone(name).state_dict(), path)
        choices.append(BackboneChoice.parse(f"{name}={path}"))
    return choices


@pytest.fixture(autouse=True)
def small_grid_in_a_temporary_folder(monkeypatch, tmp_path):
    """One logistic-regression C instead of three (the same code paths in a third of the time);
    the default feature cache (.cache/features) lands in the test's own folder."""
    import emorec.fit.candidates as candidates

    monkeypatch.setattr(candidates, "LOGREG_C", (0.1,))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """12 images per class: 80/10/10 gives every class a val and a test image."""
    return make_images(tmp_path_factory.mktemp("fit") / "images", per_class=12)


def leaderboard(output: Path) -> list[dict[str, str]]:
    with open(output / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))
