"""Decode an image file to an RGB PIL image, correctly and no larger than needed.

- EXIF orientation is applied (phone photos are stored sideways with a rotation tag).
- Every mode becomes RGB: alpha is composited on white (a transparent background would
  otherwise turn black), CMYK goes through Pillow's conversion, 16-bit greyscale is scaled by
  1/257 (a plain `convert("RGB")` clips it to white).
- JPEGs use Pillow's draft mode: the decoder scales by 1/2, 1/4 or 1/8 while decoding (DCT
  scaling), to the smallest size whose sides are still >= `min_size`, so a 4000 px photo is not
  fully decoded only to be resized to 224.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from emorec.errors import EmorecError

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class ImageLoadError(EmorecError):
    """An image file that cannot be decoded; `path` and `reason` are kept for reports."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), " ".join(str(reason).split())
        super().__init__(f"cannot read image {self.path}: {self.reason}; replace or remove the file "
                         "(`emorec data check` lists every such file)")


def open_image(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Open and decode `path` (draft-scaled for JPEG when `min_size` is given), mode unchanged."""
    try:
        image = Image.open(path)
        if min_size and image.format == "JPEG":
            # Requested box min_size x min_size: draft keeps both sides >= it, whatever the rotation.
            image.draft(image.mode, (min_size, min_size))
        image.load()  # decode now, so a truncated file fails here and not inside a transform
        return image
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, bomb errors...
        # The size is looked at only on failure: a stat per image costs on 48 px faces.
        if os.path.exists(path) and os.path.getsize(path) == 0:
            raise ImageLoadError(path, "empty file (0 bytes)") from None
        raise ImageLoadError(path, f"{type(e).__name__}: {e}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, with alpha on white and high bit depths scaled, not clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        pixels = np.asarray(image).astype(np.float32)
        # I;16 is 16-bit; "I"/"F" carry no bit depth, so scale only when values exceed 8 bits.
        if mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels / 257.0
        grey = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode `path` to RGB with EXIF orientation applied; JPEGs at >= `min_size` on each side
    (or full size when the file is smaller). Raises `ImageLoadError` for unreadable files."""
    image = open_image(path, min_size)
    try:
        # in_place: without it Pillow returns a full copy even when there is nothing to rotate.
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    except Exception as e:  # noqa: BLE001 - a corrupt EXIF block or odd mode must not crash a run
        raise ImageLoadError(path, f"{type(e).__name__}: {e}") from None
