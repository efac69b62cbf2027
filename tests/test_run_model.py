"""Loading a run or checkpoint for inference, and the errors for the wrong kind of file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from emorec.errors import EmorecError
from emorec.run_model import load_model, load_run_model

# The run factory lives beside the evaluation tests; reused here rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parent / "evaluation"))
from run_factory import make_run, one_torch_thread  # noqa: E402,F401 (one_torch_thread: autouse fixture)


@pytest.fixture
def fake_run(tmp_path, tiny_dataset):
    return make_run(tmp_path / "run", tiny_dataset)


def test_run_dir_and_checkpoint_file_load_the_same_model(fake_run):
    model, label_map, transform = load_model(fake_run)
    assert label_map.names == ["amusement", "anger", "awe", "fear"]
    assert not model.training
    loaded = load_run_model(fake_run / "checkpoints" / "best.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.epoch == 3 and loaded.mean == [0.485, 0.456, 0.406]


def test_a_checkpoint_that_does_not_fit_its_model_is_refused(fake_run):
    path = fake_run / "checkpoints" / "best.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["head.classifier.weight"]
    torch.save(ckpt, path)
    with pytest.raises(EmorecError, match="1 missing and 0 unexpected weights"):
        load_model(fake_run)


def test_an_empty_run_dir_and_a_foreign_file_are_clear_errors(tmp_path):
    with pytest.raises(EmorecError, match="no checkpoint in run directory"):
        load_model(tmp_path)
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(EmorecError, match="emorec checkpoint"):
        load_model(foreign)
