"""A fake trained run for the serving tests, built by the evaluation tests' run factory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The run factory lives beside the evaluation tests; serving tests reuse it rather than copy it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
# The real photos the face tests use (face_photos.py), for faces=true through the API.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faces"))
from run_factory import make_run, one_torch_thread  # noqa: E402,F401 (one_torch_thread: autouse fixture)


@pytest.fixture
def fake_run(tmp_path, tiny_dataset):
    return make_run(tmp_path / "run", tiny_dataset)


@pytest.fixture(scope="session")
def served_run(tmp_path_factory):
    """A tiny run with its ONNX export, built once per test process for the server tests."""
    from server_models import build_served_run

    return build_served_run(tmp_path_factory.mktemp("served"))
