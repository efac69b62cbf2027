"""`predict --faces`: one row per face with its box in the photo's pixels, a `no_face` row for a
photo without one, unreadable files reported, annotated copies drawn."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from face_photos import FER_LABELS, shipped_photo
from PIL import Image

from emorec.cli import main
from emorec.data.inputs import Failure
from emorec.faces.detect import Face
from emorec.faces.predict import predict_faces


class FixedDetector:
    def __init__(self, faces):
        self.faces = faces

    def detect(self, image):
        return self.faces


class BrightnessPredictor:
    """Two labels; 'bright' gets the crop's mean brightness as its probability."""

    labels = ["dark", "bright"]

    def __init__(self):
        self.sizes = []

    def predict_images(self, images):
        self.sizes += [im.size for im in images]
        bright = np.array([np.asarray(im.convert("L")).mean() / 255.0 for im in images])
        return np.stack([1 - bright, bright], 1)


def test_predict_faces_classifies_each_crop_and_keeps_the_boxes():
    photo = Image.new("RGB", (200, 100), "black")
    photo.paste((255, 255, 255), (120, 20, 180, 80))
    faces = [Face((10, 20, 70, 80), 0.95), Face((120, 20, 180, 80), 0.99)]
    predictor = BrightnessPredictor()
    results = predict_faces(predictor, photo, FixedDetector(faces), top_k=5, margin=0.0)
    assert predictor.sizes == [(60, 60), (60, 60)]
    assert [r["box"] for r in results] == [[10, 20, 70, 80], [120, 20, 180, 80]]
    assert [r["det_score"] for r in results] == pytest.approx([0.95, 0.99])
    assert [r["top_k"][0]["label"] for r in results] == ["dark", "bright"]
    assert all(len(r["top_k"]) == 2 for r in results)  # top_k is capped at the number of labels
    assert predict_faces(predictor, photo, FixedDetector([]), top_k=1) == []


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shipped_photo("astronaut").save(folder / "astronaut.png")
    shipped_photo("coffee").save(folder / "coffee.jpg", quality=90)
    return folder


def test_csv_has_a_row_per_face_and_a_no_face_row(face_run, photos, tmp_path, capsys):
    out = tmp_path / "faces.csv"
    code = main(["predict", str(face_run), str(photos), "--faces", "--output", str(out), "--top-k", "2", "--device", "cpu"])
    assert code == 0
    with out.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["path", "face", "x1", "y1", "x2", "y2", "det_score", "label_1", "probability_1", "label_2", "probability_2"]
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == 2
    face = by_name["astronaut.png"]
    assert face["face"] == "1" and float(face["det_score"]) > 0.9
    x1, y1, x2, y2 = (float(face[k]) for k in ("x1", "y1", "x2", "y2"))
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200  # her face, in the photo's 512 px frame
    assert face["label_1"] in FER_LABELS and float(face["probability_1"]) >= float(face["probability_2"])
    none = by_name["coffee.jpg"]
    assert none["label_1"] == "no_face"
    assert none["face"] == none["x1"] == none["det_score"] == none["probability_1"] == none["label_2"] == ""
    assert "found 1 faces in 2 photos" in capsys.readouterr().err


def test_jsonl_records_and_annotated_copies(face_run, photos, tmp_path):
    out, drawn = tmp_path / "faces.jsonl", tmp_path / "drawn"
    code = main(["predict", str(face_run), str(photos), "--faces", "--output", str(out), "--annotate", str(drawn), "--device", "cpu"])
    assert code == 0
    records = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["coffee.jpg"]["box"] is None and records["coffee.jpg"]["predictions"][0]["label"] == "no_face"
    face = records["astronaut.png"]
    assert face["face"] == 1 and len(face["box"]) == 4 and len(face["predictions"]) == 3
    assert sum(p["probability"] for p in face["predictions"]) <= 1.0 + 1e-6
    original = np.asarray(shipped_photo("astronaut"), np.int16)
    annotated = np.asarray(Image.open(drawn / "astronaut.png").convert("RGB"), np.int16)
    assert annotated.shape == original.shape
    x1, y1, x2, y2 = (round(v) for v in face["box"])
    changed = np.abs(annotated - original).sum(-1) > 0
    assert changed[y1 + 2 : y2 - 2, x1].all()  # the box's left edge is drawn
    assert not changed[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10].any()  # the face itself is left alone
    assert Image.open(drawn / "coffee.jpg").size == (600, 400)


def test_an_unreadable_photo_is_reported_and_the_others_written(face_run, photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "faces.csv"
    assert main(["predict", str(face_run), str(photos), "--faces", "--output", str(out), "--device", "cpu"]) == 0
    assert len(out.read_text().splitlines()) == 3  # header, astronaut, coffee
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "skipped 1 unreadable" in err


def test_annotate_without_faces_is_refused(face_run, photos, tmp_path, capsys):
    assert main(["predict", str(face_run), str(photos), "--annotate", str(tmp_path / "a")]) == 2
    assert "--faces" in capsys.readouterr().err


def test_an_unknown_detector_is_refused(face_run, photos, capsys):
    assert main(["predict", str(face_run), str(photos), "--faces", "--detector", "yolo", "--device", "cpu"]) == 2
    assert "mtcnn, haar" in capsys.readouterr().err


def test_a_corrupt_and_a_missing_photo_are_failures_in_their_place_through_load_or_failure(tmp_path, watch_loads):
    import emorec.faces.predict as face_predict
    from emorec.faces.predict import PhotoFaces, predict_face_paths

    seen = watch_loads(face_predict)
    good, corrupt, missing = tmp_path / "good.png", tmp_path / "corrupt.jpg", tmp_path / "missing.jpg"
    Image.new("RGB", (80, 60), "white").save(good)
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    face = Face((10, 10, 50, 50), 0.9)
    items = list(predict_face_paths(BrightnessPredictor(), [corrupt, good, missing], FixedDetector([face])))
    assert [type(item) for item in items] == [Failure, PhotoFaces, Failure]
    assert [item.path for item in items] == [str(corrupt), str(good), str(missing)]
    assert "file not found" in items[2].reason and len(items[1].faces) == 1
    assert seen == [("corrupt.jpg", True), ("good.png", False), ("missing.jpg", True)]
