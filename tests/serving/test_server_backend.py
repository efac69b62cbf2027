"""Which model file `emorec serve` loads, and the one-line errors for the wrong ones."""

from __future__ import annotations

import pytest

from emorec.errors import EmorecError
from emorec.serving.backend import onnx_path_for, open_backend


def test_a_run_directory_or_its_checkpoint_serves_its_exported_onnx(served_run):
    exported = served_run / "export" / "model.onnx"
    assert onnx_path_for(served_run) == exported
    assert onnx_path_for(served_run / "checkpoints" / "best.pt") == exported
    assert onnx_path_for(exported) == exported


def test_missing_models_and_wrong_backends_are_one_line_errors(served_run, tmp_path):
    with pytest.raises(EmorecError, match="emorec export"):
        onnx_path_for(tmp_path / "model.onnx")
    with pytest.raises(EmorecError, match="run directory"):
        onnx_path_for(tmp_path / "no-run")
    with pytest.raises(EmorecError, match="--backend onnx"):
        open_backend(served_run / "export" / "model.onnx", "torch")
    with pytest.raises(EmorecError, match="choose from onnx, torch"):
        open_backend(served_run, "tensorrt")
    (tmp_path / "bare").mkdir()
    with pytest.raises(EmorecError, match="--backend torch"):
        onnx_path_for(tmp_path / "bare", export_missing=False)


def test_both_backends_give_the_same_probabilities(served_run):
    from server_models import jpeg_bytes

    from emorec.serving.uploads import decode_upload

    image = decode_upload(jpeg_bytes(seed=5)).image
    onnx = open_backend(served_run, "onnx").predict_images([image])
    torch_probs = open_backend(served_run, "torch").predict_images([image])
    assert onnx.shape == (1, 4) and onnx == pytest.approx(torch_probs, abs=1e-4)
