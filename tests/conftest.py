"""Fixtures shared by every test area: the ../shared folder, tiny generated datasets and a spy on
`load_or_failure`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared folder beside the repository)")
    return path


def write_class_images(root: Path, classes: dict[str, int], size: int = 48, seed: int = 0) -> Path:
    """ImageFolder tree root/<label>/<label>_<i>.jpg with a learnable colour per class."""
    rng = np.random.default_rng(seed)
    for c, (label, n) in enumerate(sorted(classes.items())):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[c % 3] = 200
        base[(c + 1) % 3] = 60 * (c // 3)
        for i in range(n):
            noise = rng.normal(0, 25, (size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}_{i:03d}.jpg", quality=90)
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """4 classes x 12 images, 48 px: enough for splits, loaders and a few training steps."""
    return write_class_images(tmp_path / "tiny", {"amusement": 12, "anger": 12, "awe": 12, "fear": 12})


@pytest.fixture
def class_images():
    """`write_class_images` as a fixture, for tests that build their own ImageFolder trees."""
    return write_class_images


@pytest.fixture
def emotion6() -> Path:
    """../shared/datasets/emotion6 (skips when absent)."""
    return shared_path("datasets", "emotion6")


@pytest.fixture
def lite0_weights() -> Path:
    """../shared's tf_efficientnet_lite0 weights, with config.json beside them (skips when absent)."""
    return shared_path("weights", "tf_efficientnet_lite0", "model.safetensors")


@pytest.fixture
def fer2013() -> Path:
    """../shared/datasets/fer2013 (skips when absent)."""
    return shared_path("datasets", "fer2013")


@pytest.fixture
def watch_loads(monkeypatch):
    """`watch(module) -> seen`: replaces `module.load_or_failure` with a spy that still decodes, and
    returns the list it fills with (file name, skipped?) for each call the module makes, in order."""
    from emorec.data.inputs import Failure, load_or_failure

    def watch(module) -> list[tuple[str, bool]]:
        seen: list[tuple[str, bool]] = []

        def spy(path, min_size=None):
            result = load_or_failure(path, min_size)
            seen.append((Path(path).name, isinstance(result, Failure)))
            return result

        monkeypatch.setattr(module, "load_or_failure", spy)
        return seen

    return watch
