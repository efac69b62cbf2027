"""Crops are squares around the box with the margin, cut straight from the photo's pixels, and
turned so the eyes are level when the detector gave landmarks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from emorec.faces.crop import crop_face, crop_largest_face, eye_angle
from emorec.faces.detect import Face


def _gradient_photo(width: int = 200, height: int = 150) -> Image.Image:
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))


def test_without_landmarks_the_crop_is_the_box_plus_margin_unrotated():
    photo = _gradient_photo()
    crop = crop_face(photo, Face((60, 40, 100, 80), 1.0), margin=0.25)
    assert crop.size == (60, 60)  # 40 px box + 25% of it on each side
    expected = np.asarray(photo.crop((50, 30, 110, 90)), np.int16)
    assert np.abs(np.asarray(crop, np.int16) - expected).max() <= 1


def test_a_box_that_is_not_square_gives_a_square_around_its_centre():
    crop = crop_face(_gradient_photo(), Face((60, 40, 100, 100), 1.0), margin=0.0)
    assert crop.size == (60, 60)
    assert np.abs(np.asarray(crop, np.int16) - np.asarray(_gradient_photo().crop((50, 40, 110, 100)), np.int16)).max() <= 1


def test_parts_outside_the_photo_are_black():
    crop = np.asarray(crop_face(Image.new("RGB", (100, 100), "white"), Face((0, 0, 50, 50), 1.0), margin=0.2))
    assert crop.shape == (70, 70, 3)
    assert crop[:8, :8].max() == 0 and crop[-20:, -20:].min() == 255


def _tilted_eyes(angle_deg: float) -> tuple[Image.Image, Face]:
    """Two dark dots 60 px apart on a grey photo, their line tilted by `angle_deg`."""
    photo = Image.new("RGB", (300, 300), (128, 128, 128))
    draw = ImageDraw.Draw(photo)
    cx, cy, half = 150.0, 140.0, 30.0
    dx, dy = half * math.cos(math.radians(angle_deg)), half * math.sin(math.radians(angle_deg))
    left, right = (cx - dx, cy - dy), (cx + dx, cy + dy)
    for x, y in (left, right):
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=(0, 0, 0))
    return photo, Face((100, 100, 200, 200), 1.0, {"left_eye": left, "right_eye": right})


def _dark_blobs_rows(crop: Image.Image) -> tuple[float, float]:
    """Mean row of the dark pixels in the left and the right half of the crop."""
    dark = np.asarray(crop.convert("L")) < 60
    half = dark.shape[1] // 2
    rows = np.arange(dark.shape[0])[:, None]
    return tuple(float((rows * d).sum() / d.sum()) for d in (dark[:, :half], dark[:, half:]))


@pytest.mark.parametrize("angle", [25.0, -35.0])
def test_tilted_eyes_come_out_level(angle):
    photo, face = _tilted_eyes(angle)
    assert math.degrees(eye_angle(face)) == pytest.approx(angle)
    left_row, right_row = _dark_blobs_rows(crop_face(photo, face, margin=0.2))
    assert abs(left_row - right_row) < 1.5
    # the unaligned crop keeps the tilt: the test would see a broken rotation
    plain = Face(face.box, 1.0)
    left_row, right_row = _dark_blobs_rows(crop_face(photo, plain, margin=0.2))
    assert abs(left_row - right_row) > 20


def test_crop_largest_face_uses_the_detector_and_says_none_without_faces():
    class Fixed:
        def __init__(self, faces):
            self.faces = faces

        def detect(self, image):
            return self.faces

    photo = _gradient_photo()
    small, big = Face((10, 10, 30, 30), 1.0), Face((100, 50, 160, 110), 0.9)
    assert crop_largest_face(photo, Fixed([small, big]), margin=0.0).size == (60, 60)
    assert crop_largest_face(photo, Fixed([]), margin=0.0) is None
