"""`emorec demo --builtin` (what `make demo` runs without ../shared): the shipped models on the
sample photos scikit-image and matplotlib ship, with nothing else needed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from emorec.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from run_factory import one_torch_thread  # noqa: E402,F401 (autouse fixture)

pytest.importorskip("skimage", reason="the demo's photos come with scikit-image (a dev dependency)")
pytest.importorskip("facenet_pytorch", reason="the MTCNN detector (make install adds it)")


def test_the_builtin_demo_labels_faces_and_photos_and_explains(tmp_path, capsys):
    from emorec.zoo.registry import builtin_model

    assert main(["demo", "--builtin", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    faces_labels = builtin_model("faces").card()["labels"]
    photo_labels = builtin_model("photos").card()["labels"]
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and "." in line.split()[0]}
    assert set(lines) >= {"astronaut.png", "grace_hopper.jpg", "coffee.png", "chelsea.png", "rocket.png"}
    for portrait in ("astronaut.png", "grace_hopper.jpg"):  # one face each, labelled with a faces label
        found = lines[portrait].split("faces:")[1].split("photo:")[0].split()
        assert len(found) == 1 and found[0].strip(",") in faces_labels
    for line in lines.values():
        assert line.split("photo:")[1].split()[0] in photo_labels
    report = (tmp_path / "report.md").read_text()
    assert report.count("\n| ") == 6 and "not facts about the people shown" in report  # header + 5 photos
    with Image.open(tmp_path / "demo.png") as picture:
        assert picture.height > 1.5 * picture.width  # a row per photo: faces | Grad-CAM
