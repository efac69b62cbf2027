"""Face detectors behind one small interface: `detector.detect(photo) -> list[Face]`.

Two maintained detectors whose weights install with a package (nothing is fetched at run time):

- `mtcnn` (default): MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multitask
  Cascaded Convolutional Networks", 2016) from facenet-pytorch, whose wheel ships the P/R/O-net
  weights. It gives a confidence and five landmarks per face, so crops can be aligned by the eyes.
  facenet-pytorch's metadata pins torch < 2.3, but its MTCNN code runs on current torch: install
  it with `pip install --no-deps facenet-pytorch` (the Makefile does).
- `haar`: OpenCV's Viola-Jones frontal-face cascade (opencv-python-headless 4.x; OpenCV 5 no
  longer ships the cascade files). No landmarks, no calibrated score.

On FER-2013 collages (benchmarks/bench_faces.py, benchmarks/RESULTS.md) MTCNN finds 87% of the
faces against the cascade's 71%, with 2 false detections against 12, at about the same speed,
which is why it is the default. A better detector only needs a class with `detect` and an entry
in DETECTORS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from PIL import Image

from emorec.errors import EmorecError

# MTCNN's landmark order (facenet-pytorch): the eye on the left of the photo first.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Face:
    """One detected face: box corners (x1, y1, x2, y2) in the photo's pixels, the detector's
    confidence, and landmarks by name (`left_eye` is the eye on the left of the photo) if any."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: dict[str, tuple[float, float]] | None = None

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class FaceDetector(Protocol):
    def detect(self, image: Image.Image) -> list[Face]: ...


def _clip_box(box, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def _reading_order(faces: list[Face]) -> list[Face]:
    """Left to right, then top to bottom: face 1 of a group photo is the leftmost one."""
    return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


class MTCNNDetector:
    """MTCNN from facenet-pytorch; faces below `min_score` confidence are dropped."""

    def __init__(self, device: str = "cpu", min_score: float = 0.9, min_face_size: int = 20):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise EmorecError(
                f"the mtcnn face detector needs facenet-pytorch ({e}); install it with "
                "`pip install --no-deps facenet-pytorch==2.6.0` (--no-deps keeps your torch)"
            ) from None
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)
        self.min_score = min_score
        self.min_face_size = min_face_size

    def detect(self, image: Image.Image) -> list[Face]:
        image = image.convert("RGB")
        width, height = image.size
        if min(width, height) < self.min_face_size:
            return []  # MTCNN's image pyramid is empty below its smallest face
        boxes, scores, points = self.mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        faces = []
        for box, score, marks in zip(boxes, scores, points):
            if score is None or score < self.min_score:
                continue
            landmarks = {name: (float(x), float(y)) for name, (x, y) in zip(LANDMARK_NAMES, marks)}
            faces.append(Face(_clip_box(box, width, height), float(score), landmarks))
        return _reading_order(faces)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (Viola-Jones). Its score is 1.0 for every face: the
    cascade's stage weights are not comparable between photos."""

    CASCADE = "haarcascade_frontalface_default.xml"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_face_size: int = 20):
        try:
            import cv2
        except ImportError as e:
            raise EmorecError(f"the haar face detector needs OpenCV ({e}); install it with "
                              "`pip install 'opencv-python-headless<5'`") from None
        cascades = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not cascades:
            raise EmorecError(f"OpenCV {cv2.__version__} ships no Haar cascade files (OpenCV 5 dropped them); "
                              "install `opencv-python-headless<5` or use the mtcnn detector")
        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(cascades + self.CASCADE)
        self.scale_factor, self.min_neighbors, self.min_face_size = scale_factor, min_neighbors, min_face_size

    def detect(self, image: Image.Image) -> list[Face]:
        gray = np.asarray(image.convert("L"))
        found = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                              minSize=(self.min_face_size, self.min_face_size))
        width, height = image.size
        faces = [Face(_clip_box((x, y, x + w, y + h), width, height), 1.0) for x, y, w, h in found]
        return _reading_order(faces)


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "mtcnn": lambda device="cpu": MTCNNDetector(device=device),
    "haar": lambda device="cpu": HaarDetector(),
}


def create_detector(name: str = "mtcnn", device: str = "cpu") -> FaceDetector:
    """A detector by name (see DETECTORS); `device` is used by the detectors that run on torch."""
    if name not in DETECTORS:
        raise EmorecError(f"unknown face detector '{name}'; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name](device=device)


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box (the subject of a portrait), None when there is none."""
    return max(faces, key=lambda f: f.area, default=None)
