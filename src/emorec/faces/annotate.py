"""Draw face boxes and their top label on a copy of the photo, and save it (`predict --annotate`)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from emorec.faces.predict import NO_FACE

# matplotlib's tab10: distinct on photos and for colour-blind readers; one colour per label.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_faces(image: Image.Image, faces: list[dict], labels: list[str] | None = None) -> Image.Image:
    """A copy of `image` with each face's box and `label probability` drawn; faces are dicts as
    `predict_faces` returns them. Colours follow `labels` (the model's label list) when given."""
    out = image.convert("RGB")  # convert copies, so the caller's photo is untouched
    draw = ImageDraw.Draw(out)
    short = min(out.size)
    font = _font(max(12, short // 30))
    width = max(2, short // 250)
    if not faces:
        draw.text((width * 2, width * 2), NO_FACE, fill="white", font=font, stroke_width=2, stroke_fill="black")
        return out
    for index, face in enumerate(faces):
        best = face["top_k"][0]
        slot = labels.index(best["label"]) if labels and best["label"] in labels else index
        colour = PALETTE[slot % len(PALETTE)]
        x1, y1, x2, y2 = face["box"]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{best['label']} {best['probability']:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        pad = max(2, th // 5)
        # The label sits above the box, or inside its top edge when the box touches the photo's top.
        ty = y1 - th - 2 * pad if y1 - th - 2 * pad >= 0 else y1
        draw.rectangle((x1, ty, x1 + tw + 2 * pad, ty + th + 2 * pad), fill=colour)
        draw.text((x1 + pad - left, ty + pad - top), text, fill="white", font=font)
    return out


class AnnotationWriter:
    """Save annotated copies into `folder`, named after the photo: PNG for a PNG photo, else JPEG
    (q90). A name already used in this run gets a numeric suffix, so two `face.jpg` from
    different folders both survive."""

    def __init__(self, folder: str | Path, labels: list[str] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        self.used: set[str] = set()

    def write(self, path: str | Path, image: Image.Image, faces: list[dict]) -> Path:
        stem = Path(path).stem
        ext = ".png" if Path(path).suffix.lower() == ".png" else ".jpg"
        name, n = stem + ext, 1
        while name in self.used:
            n += 1
            name = f"{stem}_{n}{ext}"
        self.used.add(name)
        target = self.folder / name
        draw_faces(image, faces, self.labels).save(target, **({"quality": 90} if ext == ".jpg" else {}))
        return target
