"""A grid of (image, heat-map overlay) pairs with a caption each, as one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

THUMBNAIL_HEIGHT = 192
DPI = 120


def side_by_side(image: Image.Image, overlay: Image.Image, height: int = THUMBNAIL_HEIGHT) -> Image.Image:
    """The image and its overlay next to each other, both scaled to `height` px."""
    width = max(1, round(image.width * height / image.height))
    pair = Image.new("RGB", (2 * width + 4, height), "white")
    pair.paste(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), (0, 0))
    pair.paste(overlay.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), (width + 4, 0))
    return pair


def plot_explanations(items: list[dict], path: str | Path, title: str, columns: int = 3) -> Path:
    """Each item holds `image`, `overlay` (PIL) and `caption`; one cell per item, image left and
    overlay right. An empty list gives a figure that says so."""
    count = max(1, len(items))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(4.2 * columns + 0.4, 2.5 * rows + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if not items:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", fontsize=14)
        ax.axis("off")
    for index, item in enumerate(items):
        ax = fig.add_subplot(rows, columns, index + 1)
        ax.imshow(np.asarray(side_by_side(item["image"], item["overlay"])))
        ax.set_title(item["caption"], fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
