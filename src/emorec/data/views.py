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


def crop_box(size: int, index: int) -> tuple[int, int, int]:
    """(top, left, side) of the `index`-th crop view of a square image of side `size`."""
    side = max(1, round(size * CROP_FRACTION))
    margin = size - side
    fy, fx = CROP_ANCHORS[index % len(CROP_ANCHORS)]
    return round(margin * fy), round(margin * fx), side
