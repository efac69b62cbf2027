"""`decode_upload`: what the server accepts as an image, and the status it gives everything else."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from server_models import jpeg_bytes
from upload_samples import EPS, png_chunk, png_claiming

from emorec.serving.uploads import UploadError, check_content_type, decode_upload


def _status(data: bytes, **kwargs) -> int:
    with pytest.raises(UploadError) as info:
        decode_upload(data, "x", **kwargs)
    assert "\n" not in str(info.value)
    return info.value.status


def test_a_jpeg_decodes_to_rgb_and_large_ones_are_drafted_down():
    decoded = decode_upload(jpeg_bytes(size=(800, 600)), "a.jpg", min_size=64)
    assert decoded.image.mode == "RGB"
    assert 64 <= min(decoded.image.size) < 600  # DCT scaling: decoded at 1/8 .. 1/2, never below min_size
    assert decoded.full_size == (800, 600)  # what coordinates are reported in
    sx, sy = decoded.scale
    assert sx == pytest.approx(800 / decoded.image.width) and sx > 1 and sy > 1


def test_an_exif_rotated_upload_is_upright_and_its_full_size_turned_too():
    buf = io.BytesIO()
    stored = Image.new("RGB", (800, 400), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 400, 400))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    stored.save(buf, format="JPEG", exif=exif)
    decoded = decode_upload(buf.getvalue(), "phone.jpg", min_size=100)
    assert decoded.full_size == (400, 800)
    assert decoded.image.width < decoded.image.height
    top = decoded.image.crop((0, 0, decoded.image.width, decoded.image.height // 4))
    assert min(top.convert("L").getextrema()) > 200  # the white half is on top


def test_png_with_alpha_becomes_rgb_on_white():
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buf, format="PNG")
    assert decode_upload(buf.getvalue(), "a.png").image.getpixel((0, 0)) == (255, 255, 255)


def test_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert _status(png_claiming(8000, 8000)) == 413  # 64 MP: over our 50 MP default, under Pillow's guard
    assert _status(png_claiming(50_000, 50_000)) == 413  # Pillow's own bomb guard, also answered 413
    assert _status(png_claiming(300, 300), max_pixels=300 * 299) == 413


@pytest.mark.parametrize("data, status", [
    (b"", 400),
    (b"definitely not an image" * 10, 415),
    (EPS, 415),  # Pillow could open it, through Ghostscript: not on the allow-list
    (b"%PDF-1.4\n1 0 obj<<>>endobj\n", 415),
])
def test_non_images_are_refused(data, status):
    assert _status(data) == status


def test_truncated_and_corrupt_files_are_400():
    good = jpeg_bytes(size=(128, 128))
    assert _status(good[: len(good) // 2]) == 400
    # A PNG whose header is right and whose compressed pixel stream is garbage.
    header = png_claiming(16, 16)
    start = header.index(b"IDAT") - 4
    corrupt = header[:start] + png_chunk(b"IDAT", b"this is not zlib data") + png_chunk(b"IEND", b"")
    assert _status(corrupt) == 400


@pytest.mark.parametrize("kind, media_type", [("image/jpeg", "image/jpeg"), ("image/PNG; charset=binary", "image/png"),
                                              ("application/octet-stream", "application/octet-stream"), (None, ""), ("", "")])
def test_image_and_plain_byte_content_types_pass(kind, media_type):
    assert check_content_type(kind, "a") == media_type


@pytest.mark.parametrize("kind", ["text/plain", "application/json", "text/html", "application/pdf"])
def test_other_content_types_are_415(kind):
    with pytest.raises(UploadError) as info:
        check_content_type(kind, "a")
    assert info.value.status == 415
