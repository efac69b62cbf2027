"""A fake trained run (tiny random model, documented layout) for the explanation tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from run_factory import make_run, one_torch_thread  # noqa: E402,F401 (one_torch_thread: autouse fixture)


@pytest.fixture
def fake_run(tmp_path, tiny_dataset):
    return make_run(tmp_path / "run", tiny_dataset)
