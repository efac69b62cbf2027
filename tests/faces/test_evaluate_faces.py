"""`evaluate --faces`: each labelled photo is scored by its largest face; a photo without a face
(or one that cannot be read) is skipped and counted, and the report shows the explained mistakes."""

from __future__ import annotations

import json

import torch
from face_photos import fer_faces, shipped_photo, textured_background
from PIL import Image

from emorec.cli import main
from emorec.data.labels import LabelMap
from emorec.data.manifest import Sample
from emorec.faces.dataset import FaceCropDataset


def _group_photo(big: Image.Image, small: Image.Image, seed: int) -> Image.Image:
    photo = textured_background(seed)
    photo.paste(big.resize((200, 200), Image.Resampling.BICUBIC), (60, 120))
    photo.paste(small.resize((90, 90), Image.Resampling.BICUBIC), (420, 60))
    return photo


def test_the_largest_face_is_the_one_classified(fer2013, tmp_path):
    (big, label), (small, _) = fer_faces(fer2013, 2, seed=5)
    path = tmp_path / "group.png"
    _group_photo(big, small, 1).save(path)
    dataset = FaceCropDataset([Sample(str(path), label)], LabelMap([label]), transform=lambda im: im)
    crop, target, _ = dataset[0]
    assert target == 0
    assert crop.width > 150  # the 200 px face plus margin, not the 90 px one


def test_a_corrupt_and_a_missing_photo_are_skipped_and_counted_through_load_or_failure(tmp_path, watch_loads):
    import emorec.faces.dataset as face_dataset
    from emorec.data.dataset import collate_indexed

    seen = watch_loads(face_dataset)
    shipped_photo("astronaut").save(tmp_path / "astronaut.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    samples = [Sample(str(tmp_path / name), "happy") for name in ("corrupt.jpg", "astronaut.png", "missing.jpg")]
    dataset = FaceCropDataset(samples, LabelMap(["happy"]), transform=lambda im: torch.zeros(3, 8, 8), detector="haar")
    items = [dataset[i] for i in range(len(dataset))]
    assert items[0] is None and items[2] is None and items[1][2] == 1
    images, targets, indices, skipped = collate_indexed(items)
    assert indices.tolist() == [1] and skipped == 2  # what the evaluation reports as skipped
    assert seen == [("corrupt.jpg", True), ("astronaut.png", False), ("missing.jpg", True)]


def test_evaluate_faces_scores_photos_by_their_largest_face(face_run, fer2013, tmp_path, capsys):
    data = tmp_path / "photos"
    pairs = fer_faces(fer2013, 8, seed=7)
    for i in range(4):
        (big, label), (small, _) = pairs[2 * i], pairs[2 * i + 1]
        (data / label).mkdir(parents=True, exist_ok=True)
        _group_photo(big, small, i).save(data / label / f"group{i}.jpg", quality=92)
    shipped_photo("coffee").save(data / label / "coffee.jpg")  # no face: skipped, and counted
    out = tmp_path / "eval"
    code = main(["evaluate", str(face_run), "--data", str(data), "--faces", "--output", str(out), "--device", "cpu", "--no-tta"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["num_images"] == 4 and metrics["data"]["skipped"] == 1
    assert "largest face" in metrics["data"]["description"]
    assert (out / "mistakes_explained.png").is_file()
    assert "mistakes_explained.png" in (out / "report.md").read_text()
