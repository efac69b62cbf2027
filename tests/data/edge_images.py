"""Real edge-case image files, generated in the test's own folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def cmyk_jpeg(path: Path) -> Path:
    """Pure red in CMYK (C=0, M=255, Y=255, K=0)."""
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path, quality=95)
    return path


def palette_png_with_transparency(path: Path) -> Path:
    """Left half transparent (index 0), right half opaque blue (index 1)."""
    image = Image.new("P", (40, 30), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (20, 0, 40, 30))
    image.save(path, transparency=0)
    return path


def rgba_png(path: Path) -> Path:
    pixels = np.zeros((30, 40, 4), np.uint8)
    pixels[:, 20:] = (255, 0, 0, 255)  # right half opaque red, left half fully transparent black
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def gray16_png(path: Path, value: int = 32896) -> Path:
    """16-bit greyscale at `value` (32896 = 128 * 257, mid-grey)."""
    Image.fromarray(np.full((30, 40), value, np.uint16)).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 60 wide x 20 high with orientation 6 (rotate 90 clockwise to view): shown 20 x 60."""
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, :30] = (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def large_jpeg(path: Path, width: int = 2000, height: int = 1500) -> Path:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (height // 50, width // 50, 3), np.uint8)
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(path, quality=85)
    return path
