"""A cheap look at what kind of images a dataset holds: their size and whether they are grey.

`profile_images` opens an evenly spaced sample of the files (headers only, plus a small decode for
colour-mode files, to tell grey pixels stored as RGB from colour), so it costs well under a
second on any dataset. `emorec demo` uses it to tell small grayscale face crops (FER-2013: 48 px,
mode L) from photos and pick the matching recipe.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
# JPEG stores grey pixels saved as RGB with near-constant chroma; decoded channels differ by a
# rounding step or two, colour photos by tens.
GREY_TOLERANCE = 3
THUMBNAIL = 64


@dataclass
class ImageProfile:
    sampled: int  # readable images looked at
    median_short_side: float  # px; 0 when nothing was readable
    grey_fraction: float  # share of the sampled images without colour

    def describe(self) -> str:
        return (f"median shorter side {self.median_short_side:.0f} px, {self.grey_fraction:.0%} grayscale "
                f"({self.sampled} images sampled)")


def is_grey(image: Image.Image) -> bool:
    """True for grey modes, and for colour-mode images whose channels agree (grey saved as RGB)."""
    if image.mode in GREY_MODES:
        return True
    if image.mode == "P":
        image = image.convert("RGB")
    image.draft("RGB", (THUMBNAIL, THUMBNAIL))  # JPEG: decode at a fraction of the size
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int(np.abs(pixels - pixels[..., :1]).max()) <= GREY_TOLERANCE


def profile_images(paths: list[str | Path], sample: int = 48) -> ImageProfile:
    """Size and greyness of up to `sample` evenly spaced files of `paths` (unreadable ones skipped)."""
    if not paths:
        return ImageProfile(0, 0.0, 0.0)
    step = max(1, len(paths) // sample)
    sides, grey = [], 0
    for path in paths[::step][:sample]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
                grey += is_grey(image)
        except Exception:  # noqa: BLE001 - a sample of a dataset: unreadable files are `data check`'s business
            continue
    if not sides:
        return ImageProfile(0, 0.0, 0.0)
    return ImageProfile(len(sides), float(statistics.median(sides)), grey / len(sides))
