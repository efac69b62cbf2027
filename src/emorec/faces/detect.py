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

from emorec.data.imageio import to_rgb
from emorec.errors import EmorecError

# The shorter side a detector sees at most (`detect_faces`); `emorec serve --face-detect-size`.
DETECT_SIZE = 1280
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

    def scaled(self, sx: float, sy: float) -> Face:
        """The same face in an image `sx` times wider and `sy` times taller."""
        x1, y1, x2, y2 = self.box
        marks = None if self.landmarks is None else {k: (x * sx, y * sy) for k, (x, y) in self.landmarks.items()}
        return Face((x1 * sx, y1 * sy, x2 * sx, y2 * sy), self.score, marks)


class FaceDetector(Protocol):
    def detect(self, image: Image.Image) -> list[Face]: ...


def _clip_box(box, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def _clipped_face(box, width: int, height: int, score: float, landmarks=None) -> Face | None:
    """The face with its box clipped to the photo; None when nothing of it is left inside (a box
    off the edge would otherwise reach the classifier as a 1 x 1 crop)."""
    clipped = _clip_box(box, width, height)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None
    return Face(clipped, score, landmarks)


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
        image = to_rgb(image)  # transparency onto white, as everywhere else
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
            faces.append(_clipped_face(box, width, height, float(score), landmarks))
        return _reading_order([f for f in faces if f is not None])


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
        gray = np.asarray(to_rgb(image).convert("L"))
        found = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                              minSize=(self.min_face_size, self.min_face_size))
        width, height = image.size
        faces = [_clipped_face((x, y, x + w, y + h), width, height, 1.0) for x, y, w, h in found]
        return _reading_order([f for f in faces if f is not None])


# The package each detector needs, and how to install it.
DETECTOR_PACKAGES = {
    "mtcnn": ("facenet_pytorch", "pip install --no-deps facenet-pytorch==2.6.0"),
    "haar": ("cv2", "pip install 'opencv-python-headless<5'"),
}

DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "mtcnn": lambda device="cpu": MTCNNDetector(device=device),
    "haar": lambda device="cpu": HaarDetector(),
}


def detector_missing(name: str) -> str | None:
    """Why detector `name` cannot be created here (one line naming the fix), or None when it can;
    found without importing the detector's package."""
    import importlib.util

    if name not in DETECTORS:
        return f"unknown face detector '{name}'; choose one of {', '.join(DETECTORS)}"
    package, install = DETECTOR_PACKAGES[name]
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"the {name} face detector needs the {package} package: {install}"


def create_detector(name: str = "mtcnn", device: str = "cpu") -> FaceDetector:
    """A detector by name (see DETECTORS); `device` is used by the detectors that run on torch."""
    if name not in DETECTORS:
        raise EmorecError(f"unknown face detector '{name}'; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name](device=device)


def detect_faces(detector: FaceDetector, image: Image.Image, detect_size: int | None = DETECT_SIZE) -> list[Face]:
    """Faces in `image`'s own pixels, found on a copy whose shorter side is at most `detect_size`.

    A detector's cost grows with the pixels it scans, while faces large enough to classify stay
    findable at a shorter side near 1,000-1,600 px; so a 12 MP phone photo is scaled down for
    detection and the boxes are scaled back up. None: detect at the image's own size.
    """
    width, height = image.size
    factor = 1.0 if not detect_size else detect_size / min(width, height)
    if factor >= 1.0:
        return detector.detect(image)
    small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR,
                         reducing_gap=2.0)
    sx, sy = width / small.width, height / small.height
    faces = []
    for face in detector.detect(small):
        big = face.scaled(sx, sy)
        faces.append(_clipped_face(big.box, width, height, big.score, big.landmarks))
    return [f for f in faces if f is not None]


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box (the subject of a portrait), None when there is none."""
    return max(faces, key=lambda f: f.area, default=None)
