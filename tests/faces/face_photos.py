"""Test photos: real ones that packages ship (scikit-image, matplotlib), FER-2013 faces for
collages with known boxes, and a textured background."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
from PIL import Image

FER_LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def shipped_photo(name: str) -> Image.Image:
    """A photo shipped by scikit-image (`astronaut`, `camera`, `coffee`, ...) or matplotlib
    (`grace_hopper`), as RGB."""
    if name == "grace_hopper":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


# Photos with exactly one face, and photos with none (textures, a cat, coins, a coffee cup).
FACE_PHOTOS = ("astronaut", "camera", "grace_hopper")
NO_FACE_PHOTOS = ("coffee", "chelsea", "rocket", "brick", "coins")


def fer_faces(root: Path, count: int, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """`count` FER-2013 validation faces (image, label), drawn with a fixed seed."""
    with (root / "labels.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    picked = random.Random(seed).sample(rows, count)
    return [(Image.open(root / r["path"]).convert("RGB"), r["label"]) for r in picked]


def textured_background(seed: int = 0) -> Image.Image:
    """Smooth coloured noise: texture without anything face-like."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (12, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
