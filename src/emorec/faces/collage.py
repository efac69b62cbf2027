"""Multi-face test photos with known boxes: face crops upscaled and pasted on a background.

A detector's recall can only be measured where every face's box is known. Pasting face crops
(e.g. FER-2013's 48 px faces) at 120-200 px into the cells of a grid, with some jitter, gives a
group photo whose ground truth is exact. The pasted square is the crop's extent, which is wider
than a detector's box on tight crops, so match at a loose IoU (0.3), as benchmarks/bench_faces.py does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def make_collage(faces: list[Image.Image], background: Image.Image, columns: int = 6,
                 sizes: tuple[int, int] = (120, 200), seed: int = 0) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """(photo, boxes): `faces` pasted one per grid cell at a random side in `sizes`, at a random
    place inside the cell, on a copy of `background` (stretched to fit the grid).

    Cells are `sizes[1] + 20` px wide and `sizes[1] + 40` px high, so faces never overlap.
    Boxes are (x1, y1, x2, y2) in the photo's pixels, in the order of `faces`.
    """
    rng = np.random.default_rng(seed)
    rows = -(-len(faces) // columns)
    cell_w, cell_h = sizes[1] + 20, sizes[1] + 40
    photo = background.convert("RGB").resize((columns * cell_w, rows * cell_h), Image.Resampling.BILINEAR)
    boxes = []
    for i, face in enumerate(faces):
        side = int(rng.integers(sizes[0], sizes[1] + 1))
        x = (i % columns) * cell_w + int(rng.integers(0, cell_w - side + 1))
        y = (i // columns) * cell_h + int(rng.integers(0, cell_h - side + 1))
        photo.paste(face.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), (x, y))
        boxes.append((x, y, x + side, y + side))
    return photo, boxes


def box_iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(truth, found, iou: float = 0.3) -> tuple[int, int]:
    """(true faces found, false detections): greedy one-to-one matching, best IoU first."""
    pairs = sorted(((box_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f = set(), set()
    for value, i, j in pairs:
        if value < iou:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t), len(found) - len(used_f)
