"""A fake trained run (tiny random model, documented layout) for the evaluation tests."""

from __future__ import annotations

import pytest
from run_factory import make_run, one_torch_thread  # noqa: F401 (one_torch_thread: autouse fixture)


@pytest.fixture
def fake_run(tmp_path, tiny_dataset):
    return make_run(tmp_path / "run", tiny_dataset)
