"""Classify every face in a photo: detect, crop (aligned), run a face-trained model on the crops.

`predict_faces` works on one decoded photo and is what a server calls. `predict_face_paths`
streams files (an unreadable file becomes a `Failure`, never an exception) and
`FacePredictionWriter` writes one CSV / JSON Lines row per face. A photo without a face still
gets a row, labelled `no_face`, so no input disappears from the output silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from emorec.data.inputs import Failure, load_or_failure
from emorec.faces.crop import crop_face
from emorec.faces.detect import DETECT_SIZE, Face, FaceDetector, detect_faces
from emorec.prediction_rows import PredictionWriter

NO_FACE = "no_face"
BOX_COLUMNS = ("x1", "y1", "x2", "y2")


def predict_faces(predictor, image: Image.Image, detector: FaceDetector, top_k: int = 3, *, margin: float = 0.2,
                  tta: bool = False, detect_size: int | None = DETECT_SIZE, scale: tuple[float, float] = (1.0, 1.0)) -> list[dict]:
    """One dict per face, left to right: `{"box": [x1, y1, x2, y2], "det_score": float,
    "top_k": [{"label": str, "probability": float}, ...]}` (most probable first); [] without faces.

    `predictor` is anything with `predict_images(list[PIL.Image]) -> (N, K) probabilities` and
    `labels` (e.g. `serving.predict.open_predictor(...)`). Detection runs on a copy whose shorter
    side is at most `detect_size`; crops are cut from `image` itself; boxes are reported in
    `image`'s pixels times `scale` (a reduced decode's `Decoded.scale` gives the photo's own).
    """
    faces = detect_faces(detector, image, detect_size)
    if not faces:
        return []
    crops = face_crops(image, faces, margin)
    probs = predictor.predict_images(crops, tta=True) if tta else predictor.predict_images(crops)
    return face_results(faces, probs, predictor.labels, top_k, scale)


def face_crops(image: Image.Image, faces: list[Face], margin: float = 0.2) -> list[Image.Image]:
    return [crop_face(image, face, margin) for face in faces]


def face_results(faces: list[Face], probs, labels: list[str], top_k: int, scale: tuple[float, float] = (1.0, 1.0)) -> list[dict]:
    """`predict_faces`'s dicts from the faces and their crops' probabilities (N, K)."""
    k = max(1, min(top_k, len(labels)))
    results = []
    for face, p in zip(faces, np.asarray(probs)):
        order = np.argsort(-p)[:k]
        results.append({
            "box": [float(v) for v in face.scaled(*scale).box],
            "det_score": float(face.score),
            "top_k": [{"label": labels[i], "probability": float(p[i])} for i in order],
        })
    return results


@dataclass
class PhotoFaces:
    """The faces found in one photo (dicts as `predict_faces` returns them) and the decoded photo."""

    path: str
    faces: list[dict]
    image: Image.Image | None = field(default=None, repr=False)


def predict_face_paths(predictor, paths: list[Path], detector: FaceDetector, top_k: int = 3,
                       margin: float = 0.2, tta: bool = False) -> Iterator[PhotoFaces | Failure]:
    """One `PhotoFaces` (or `Failure` for an unreadable file) per path, in input order."""
    for path in paths:
        image = load_or_failure(path)  # full size: boxes are reported in the photo's own pixels
        if isinstance(image, Failure):
            yield image
            continue
        yield PhotoFaces(str(path), predict_faces(predictor, image, detector, top_k, margin=margin, tta=tta), image)


def face_rows(photo: PhotoFaces) -> list[dict]:
    """Flat records, one per face (face numbered from 1), or one `no_face` record without a box."""
    if not photo.faces:
        return [{"path": photo.path, "face": None, "box": None, "det_score": None,
                 "predictions": [{"label": NO_FACE, "probability": None}]}]
    return [{"path": photo.path, "face": i, "box": [round(v, 1) for v in face["box"]], "det_score": round(face["det_score"], 4),
             "predictions": [{"label": t["label"], "probability": round(t["probability"], 6)} for t in face["top_k"]]}
            for i, face in enumerate(photo.faces, start=1)]


class FacePredictionWriter(PredictionWriter):
    """CSV (path, face, x1, y1, x2, y2, det_score, label_1, probability_1, ...) or JSON Lines."""

    LEAD_COLUMNS = ("path", "face", *BOX_COLUMNS, "det_score")

    def write(self, photo: PhotoFaces) -> None:
        for record in face_rows(photo):
            if self.jsonl:
                self.file.write(json.dumps(record) + "\n")
                continue
            box = record["box"] or [""] * 4
            row = [record["path"], "" if record["face"] is None else record["face"], *box,
                   "" if record["det_score"] is None else record["det_score"]]
            for p in record["predictions"]:
                row += [p["label"], "" if p["probability"] is None else f"{p['probability']:.6f}"]
            self.csv.writerow(row + [""] * (self.width - len(row)))  # a no_face row has one label


def format_faces(photo: PhotoFaces, width: int) -> list[str]:
    """Aligned console lines: path, face number and box, then `label probability` pairs."""
    lines = []
    for record in face_rows(photo):
        if record["box"] is None:
            lines.append(f"{photo.path:<{width}}  {NO_FACE}")
            continue
        box = ",".join(f"{v:.0f}" for v in record["box"])
        guesses = "  ".join(f"{p['label']:<12} {p['probability']:6.1%}" for p in record["predictions"])
        lines.append(f"{photo.path:<{width}}  face {record['face']:<2} [{box}]  {guesses}")
    return lines
