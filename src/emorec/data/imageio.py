"""Decode an image, from a file or from bytes, to an RGB PIL image: correctly and no larger than needed.

This is the one decode path of the project: training, prediction, faces, explanations and the
server's uploads all go through `decode_rgb`.

- EXIF orientation is applied (phone photos are stored sideways with a rotation tag).
- Every mode becomes RGB: alpha is composited on white (a transparent background would
  otherwise turn black), CMYK goes through Pillow's conversion, 16-bit greyscale is scaled by
  1/257 (a plain `convert("RGB")` clips it to white).
- JPEGs use Pillow's draft mode: the decoder scales by 1/2, 1/4 or 1/8 while decoding (DCT
  scaling), to the smallest size whose sides are still >= `min_size`, so a 4000 px photo is not
  fully decoded only to be resized to 224. `Decoded.full_size` keeps the photo's own size, so
  coordinates found on the reduced image can be reported in the photo's pixels.
- Untrusted input (uploads) can be held to a list of formats and a pixel count read from the
  header before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from emorec.errors import EmorecError

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# EXIF orientations that turn the stored image by 90 degrees (width and height swap).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


class ImageLoadError(EmorecError):
    """An image that cannot be decoded; `path`, `reason` and `kind` are kept for reports.

    `kind` says which fault it is, so a caller can map it (the server: to an HTTP status):
    "missing", "empty", "format" (not an image, or a format not allowed), "too_large", "corrupt".
    """

    def __init__(self, path: str | Path, reason: str, kind: str = "corrupt"):
        self.path, self.reason, self.kind = str(path), " ".join(str(reason).split()), kind
        super().__init__(f"cannot read image {self.path}: {self.reason}; replace or remove the file "
                         "(`emorec data check` lists every such file)")


@dataclass
class Decoded:
    """An RGB image, upright, and the size of the photo it was decoded from (after EXIF rotation).

    `image` is smaller than `full_size` when a JPEG was draft-decoded; `scale` maps its pixel
    coordinates to the photo's own.
    """

    image: Image.Image
    full_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        return self.full_size[0] / self.image.width, self.full_size[1] / self.image.height


def open_image(source: str | Path | bytes, min_size: int | None = None, *, name: str | None = None,
               formats: tuple[str, ...] | None = None, max_pixels: int | None = None) -> Image.Image:
    """Open and decode `source` (a path, or the bytes of a file), mode unchanged.

    JPEGs are draft-scaled when `min_size` is given. `formats` limits the parsers Pillow may try;
    `max_pixels` is checked from the header before decoding. `name` names the source in errors.
    """
    return _open_decoded(source, min_size, _name_of(source, name), formats, max_pixels)[0]


def _name_of(source, name: str | None) -> str:
    return name or ("image" if isinstance(source, bytes) else str(source))


def _open_decoded(source, min_size, name: str, formats, max_pixels) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded image and the size its header declares (before any draft reduction)."""
    if isinstance(source, bytes) and not source:
        raise ImageLoadError(name, "empty file (0 bytes)", "empty")
    with warnings.catch_warnings():
        if max_pixels:  # Pillow warns above ~89 MP and raises above ~179 MP; then ours is the limit that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _open(source, name, formats)
        width, height = image.size
        if max_pixels and width * height > max_pixels:
            raise ImageLoadError(name, f"{width} x {height} pixels is over the limit of {max_pixels:,} pixels; "
                                       "send a smaller image", "too_large")
        if width < 1 or height < 1:
            raise ImageLoadError(name, f"image has no pixels ({width} x {height})", "corrupt")
        try:
            if min_size and image.format == "JPEG":
                # Requested box min_size x min_size: draft keeps both sides >= it, whatever the rotation.
                image.draft(image.mode, (min_size, min_size))
            image.load()  # decode now, so a truncated file fails here and not inside a transform
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for bad data
            raise _load_error(source, name, e) from None
    return image, (width, height)


def _open(source, name: str, formats) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=formats)
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found", "missing") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"image too large ({e})", "too_large") from None
    except Image.UnidentifiedImageError:
        allowed = f" ({', '.join(formats)})" if formats else ""
        raise _load_error(source, name, None, f"not an image in a supported format{allowed}", "format") from None
    except Exception as e:  # noqa: BLE001 - header parsers raise many types for hostile input
        raise _load_error(source, name, e, f"corrupt image header ({type(e).__name__})") from None


def _load_error(source, name: str, error: Exception | None, reason: str | None = None, kind: str = "corrupt") -> ImageLoadError:
    # The size is looked at only on failure: a stat per image costs on 48 px faces.
    if not isinstance(source, bytes) and os.path.exists(source) and os.path.getsize(source) == 0:
        return ImageLoadError(name, "empty file (0 bytes)", "empty")
    if reason is None:
        first_line = str(error).splitlines()[0][:200] if str(error) else ""
        reason = f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
    return ImageLoadError(name, reason, kind)


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


def decode_rgb(source: str | Path | bytes, min_size: int | None = None, *, name: str | None = None,
               formats: tuple[str, ...] | None = None, max_pixels: int | None = None) -> Decoded:
    """Decode `source` to RGB with EXIF orientation applied, with the photo's own (upright) size.

    JPEGs come out at >= `min_size` on each side (or full size when smaller). Raises
    `ImageLoadError` for anything that cannot be decoded; see `open_image` for the other arguments.
    """
    name = _name_of(source, name)
    image, (full_width, full_height) = _open_decoded(source, min_size, name, formats, max_pixels)
    try:
        if image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
            full_width, full_height = full_height, full_width
        # in_place: without it Pillow returns a full copy even when there is nothing to rotate.
        ImageOps.exif_transpose(image, in_place=True)
        return Decoded(to_rgb(image), (full_width, full_height))
    except Exception as e:  # noqa: BLE001 - a corrupt EXIF block or odd mode must not crash a run
        raise ImageLoadError(name, f"{type(e).__name__}: {e}") from None


def load_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode `path` to RGB with EXIF orientation applied; JPEGs at >= `min_size` on each side
    (or full size when the file is smaller). Raises `ImageLoadError` for unreadable files."""
    return decode_rgb(path, min_size).image
