"""A grid of (image, heat-map overlay) pairs with a caption each, as one PNG.

Drawn with PIL rather than matplotlib: `evaluate` writes one of these for every evaluation, and
a 12-panel matplotlib figure costs seconds where pasting thumbnails costs milliseconds.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIDE = 192  # each image and overlay is fitted into a SIDE x SIDE box
GAP = 8
FONT_SIZE = 14


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _fit(image: Image.Image, side: int = SIDE) -> Image.Image:
    scale = side / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def side_by_side(image: Image.Image, overlay: Image.Image, side: int = SIDE) -> Image.Image:
    """The image and its overlay next to each other, each fitted into a side x side box."""
    pair = Image.new("RGB", (2 * side + GAP, side), "white")
    for i, picture in enumerate((_fit(image, side), _fit(overlay, side))):
        pair.paste(picture, (i * (side + GAP) + (side - picture.width) // 2, (side - picture.height) // 2))
    return pair


def plot_explanations(items: list[dict], path: str | Path, title: str, columns: int = 3) -> Path:
    """Each item holds `image`, `overlay` (PIL) and `caption` (lines split on newlines); one cell
    per item, image left and overlay right, caption above. An empty list gives a picture that
    says so."""
    font, title_font = _font(FONT_SIZE), _font(FONT_SIZE + 4)
    line = FONT_SIZE + 4
    lines = max([len(item["caption"].splitlines()) for item in items] or [1])
    cell_w, cell_h = 2 * SIDE + GAP, lines * line + 4 + SIDE
    columns = max(1, min(columns, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    top = 2 * line + GAP
    canvas = Image.new("RGB", (columns * cell_w + (columns + 1) * 3 * GAP, top + rows * (cell_h + 3 * GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, GAP + line // 2), title, fill="black", font=title_font, anchor="mm")
    if not items:
        draw.text((canvas.width // 2, top + cell_h // 2), "nothing to show", fill="black", font=font, anchor="mm")
    for index, item in enumerate(items):
        x = 3 * GAP + (index % columns) * (cell_w + 3 * GAP)
        y = top + (index // columns) * (cell_h + 3 * GAP)
        for k, text in enumerate(item["caption"].splitlines()):
            draw.text((x + cell_w // 2, y + k * line + line // 2), text, fill="black", font=font, anchor="mm")
        canvas.paste(side_by_side(item["image"], item["overlay"]), (x, y + lines * line + 4))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
