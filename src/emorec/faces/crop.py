"""Cut a detected face out of a photo: a square around the box, with a margin, upright.

Expression datasets (FER-2013, AffectNet, RAF-DB) hold faces aligned so the eyes are level. When
the detector gives eye landmarks, the crop is rotated about the box centre by the eye line's
angle, so a tilted head reaches the classifier the way its training faces looked. The rotation
and the crop are one affine resampling of the photo (no full-photo rotate), and parts of the
square outside the photo are black.
"""

from __future__ import annotations

import math

from PIL import Image

from emorec.data.imageio import to_rgb
from emorec.faces.detect import Face, largest_face


def eye_angle(face: Face) -> float:
    """Angle of the line from the left to the right eye, in radians (0 without eye landmarks)."""
    marks = face.landmarks or {}
    if "left_eye" not in marks or "right_eye" not in marks:
        return 0.0
    (lx, ly), (rx, ry) = marks["left_eye"], marks["right_eye"]
    return math.atan2(ry - ly, rx - lx)


def crop_face(image: Image.Image, face: Face, margin: float = 0.2) -> Image.Image:
    """The face as a square RGB image whose side is the box's longer side plus `margin` of it on
    each side, centred on the box, rotated so the eyes are level when landmarks exist."""
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    size = max(1, round(side))
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    angle = eye_angle(face)
    cos, sin = math.cos(angle), math.sin(angle)
    # PIL maps each output pixel (u, v) to the input point (a u + b v + c, d u + e v + f): here the
    # output axes are the eye line and its normal, centred on the box centre.
    half = size / 2.0
    data = (cos, -sin, cx - cos * half + sin * half,
            sin, cos, cy - sin * half - cos * half)
    return to_rgb(image).transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)


def crop_largest_face(image: Image.Image, detector, margin: float = 0.2) -> Image.Image | None:
    """The crop of the photo's largest face (its subject), None when no face is found."""
    face = largest_face(detector.detect(image))
    return None if face is None else crop_face(image, face, margin)
