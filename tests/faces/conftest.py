"""Fixtures for the face tests: the MTCNN detector (built once) and a fake face-trained run
(tiny random model with FER-2013's labels: the tests check what is written, not what is recognised)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from face_photos import FER_LABELS  # noqa: E402
from run_factory import make_run, one_torch_thread  # noqa: E402,F401 (one_torch_thread: autouse fixture)


@pytest.fixture(scope="session")
def mtcnn():
    from emorec.faces.detect import create_detector

    return create_detector("mtcnn")


@pytest.fixture
def face_run(tmp_path, class_images):
    """A run directory whose model has FER-2013's seven labels."""
    data = class_images(tmp_path / "fer-like", {label: 3 for label in FER_LABELS})
    return make_run(tmp_path / "face-run", data)
