"""The evaluation's most confident mistakes with their Grad-CAM overlays, as one PNG.

A confusion matrix says which classes are confused; the overlays say what in the image the model
took as evidence for its wrong answer (a background, a caption, a second face...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PIL import Image

from emorec.errors import EmorecError
from emorec.explain.gradcam import gradcam_map, overlay
from emorec.explain.grid import plot_explanations

TITLE = "Most confident mistakes and the regions behind the wrong class (Grad-CAM, red = most relevant)"


def plot_explained_mistakes(model, transform, mistakes: list[dict], names: list[str], path: str | Path,
                            load: Callable[[str], Image.Image | None] | None = None) -> Path:
    """`mistakes` as `evaluate_run` lists them (path, true, predicted, confidence); each image is
    read again with `load` (default `load_rgb`; None or an unreadable file leaves it out) and shown
    beside its heat map for the predicted class."""
    from emorec.data.imageio import load_rgb

    load = load or load_rgb
    items = []
    for mistake in mistakes:
        try:
            image = load(mistake["path"])
        except EmorecError:
            continue
        if image is None:
            continue
        heat, _ = gradcam_map(model, image, transform, names.index(mistake["predicted"]))
        items.append({"image": image, "overlay": overlay(image, heat),
                      "caption": f"true: {mistake['true']}\npredicted: {mistake['predicted']} ({mistake['confidence']:.0%})"})
    return plot_explanations(items, path, TITLE)
