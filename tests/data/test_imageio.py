"""load_rgb turns every real-world file variant into a correct RGB image, or a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from edge_images import (cmyk_jpeg, exif_rotated_jpeg, gray16_png, large_jpeg, palette_png_with_transparency,
                         rgba_png, truncated_jpeg, zero_byte)
from PIL import Image

from emorec.data.imageio import ImageLoadError, load_rgb
from emorec.errors import EmorecError


def test_cmyk_jpeg_becomes_the_same_colour_in_rgb(tmp_path):
    image = load_rgb(cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert image.mode == "RGB"
    r, g, b = np.asarray(image).reshape(-1, 3).mean(0)
    assert r > 200 and g < 50 and b < 50


def test_palette_transparency_is_composited_on_white(tmp_path):
    pixels = np.asarray(load_rgb(palette_png_with_transparency(tmp_path / "p.png")))
    assert pixels[:, :20].min() == 255  # transparent half: white, not black
    assert tuple(pixels[5, 30]) == (0, 0, 255)


def test_rgba_transparency_is_composited_on_white(tmp_path):
    pixels = np.asarray(load_rgb(rgba_png(tmp_path / "a.png")))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[0, 39]) == (255, 0, 0)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    image = load_rgb(gray16_png(tmp_path / "g16.png", value=128 * 257))
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - 128).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    image = load_rgb(exif_rotated_jpeg(tmp_path / "rot.jpg"))
    assert image.size == (20, 60)
    pixels = np.asarray(image).mean(axis=(1, 2))
    # Orientation 6: the white left half of the stored image ends up on top.
    assert pixels[:25].mean() > 200 and pixels[-25:].mean() < 50


@pytest.mark.parametrize("make, reason", [(truncated_jpeg, "truncated"), (zero_byte, "empty file")])
def test_broken_files_raise_image_load_error_with_the_path(tmp_path, make, reason):
    path = make(tmp_path / "bad.jpg")
    with pytest.raises(ImageLoadError) as info:
        load_rgb(path)
    assert isinstance(info.value, EmorecError)
    assert info.value.path == str(path) and reason in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_non_image_files_raise(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_rgb(tmp_path / "nope.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageLoadError):
        load_rgb(tmp_path / "text.jpg")


def test_large_jpeg_is_draft_decoded_but_never_below_min_size(tmp_path):
    path = large_jpeg(tmp_path / "big.jpg", 2000, 1500)
    assert load_rgb(path).size == (2000, 1500)
    small = load_rgb(path, min_size=224)
    assert min(small.size) >= 224 and small.size[0] < 1000  # 1/4 scale (500 x 375) is the smallest >= 224
    assert small.size == (500, 375)
    assert load_rgb(path, min_size=400).size == (1000, 750)


def test_draft_decode_of_a_rotated_jpeg_keeps_both_sides_above_min_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    Image.new("RGB", (1600, 900), (10, 20, 30)).save(path, exif=exif)
    image = load_rgb(path, min_size=200)
    assert image.size[0] < image.size[1] and min(image.size) >= 200


def test_greyscale_jpeg_becomes_rgb_with_equal_channels(tmp_path):
    Image.fromarray(np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1)), "L").save(tmp_path / "g.jpg")
    pixels = np.asarray(load_rgb(tmp_path / "g.jpg"))
    assert pixels.shape == (48, 48, 3)
    assert (pixels[..., 0] == pixels[..., 2]).all()
