"""Crop geometry shared by the eval transform, the test-time-augmentation views and the numpy
preprocessing of the ONNX path.

Kept free of torch so the ONNX predictor can build the same views with numpy alone.
"""

from __future__ import annotations

# The eval transform is Resize(size / CROP_FRACTION) + CenterCrop(size), the ImageNet convention
# (timm's default crop_pct). A TTA crop view zooms in by the same amount, so objects stay a
# familiar size.
CROP_FRACTION = 0.875

# Crop anchors as (row, column) fractions of the free margin: centre first, then the corners.
CROP_ANCHORS = ((0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))

# TTA modes: "views" = the original, its mirror (eval.tta_hflip) and eval.tta_crops zoomed crops,
# all cut from the eval crop; "ten-crop" = the five anchored crops of the eval size cut from the
# whole resized image, and their mirrors (Krizhevsky et al. 2012; the standard TTA of FER-2013
# papers, e.g. Khaireddin & Chen 2021).
TTA_MODES = ("views", "ten-crop")
TEN_CROP = "ten-crop"
TEN_CROP_VIEWS = 2 * len(CROP_ANCHORS)


def anchored_box(full: int, side: int, index: int) -> tuple[int, int]:
    """(top, left) of the `index`-th anchored crop of side `side` in a square of side `full`.
    The centre anchor rounds like torchvision's CenterCrop, so crop 0 is the eval crop."""
    margin = full - side
    fy, fx = CROP_ANCHORS[index % len(CROP_ANCHORS)]
    return round(margin * fy), round(margin * fx)


def crop_box(size: int, index: int) -> tuple[int, int, int]:
    """(top, left, side) of the `index`-th zoomed crop view of a square image of side `size`."""
    side = max(1, round(size * CROP_FRACTION))
    return (*anchored_box(size, side, index), side)


def ten_crop_boxes(full: int, side: int) -> list[tuple[int, int]]:
    """(top, left) of the five ten-crop windows (centre, then the corners) of side `side` in a
    square of side `full`; the other five views are their mirrors."""
    if not 0 < side <= full:
        raise ValueError(f"ten-crop windows of {side} px do not fit a {full} px image")
    return [anchored_box(full, side, i) for i in range(len(CROP_ANCHORS))]
