"""`load_or_failure`: the one definition of an unreadable input, shared by every command that
reads the user's images; `collect_inputs` is tested with `predict` (tests/serving/test_predict.py)."""

from __future__ import annotations

import pytest
from edge_images import truncated_jpeg, zero_byte
from PIL import Image

import emorec.data.imageio as imageio
from emorec.data.inputs import Failure, load_or_failure


def test_a_readable_image_comes_back_decoded_at_the_asked_size(tmp_path):
    Image.new("RGB", (400, 300), "red").save(tmp_path / "big.jpg")
    image = load_or_failure(tmp_path / "big.jpg", min_size=64)
    assert image.mode == "RGB" and 64 <= min(image.size) < 300  # draft-decoded, not full size


def _text_as_jpeg(path):
    path.write_bytes(b"\xff\xd8 not a jpeg")
    return path


@pytest.mark.parametrize("make,reason", [
    (lambda folder: folder / "missing.jpg", "file not found"),
    (lambda folder: zero_byte(folder / "empty.jpg"), "empty file"),
    (lambda folder: _text_as_jpeg(folder / "text.jpg"), "not an image"),
    (lambda folder: truncated_jpeg(folder / "cut.jpg"), ""),
])
def test_every_unreadable_file_becomes_a_failure_naming_it(tmp_path, make, reason):
    path = make(tmp_path)
    failure = load_or_failure(path)
    assert isinstance(failure, Failure) and failure.path == str(path)
    assert reason in failure.reason and "replace or remove" not in failure.reason  # the reason, not the advice


def test_an_error_that_is_not_about_the_file_is_not_hidden(tmp_path, monkeypatch):
    def broken(path, min_size=None):
        raise TypeError("a bug in emorec, not a bad image")

    monkeypatch.setattr(imageio, "load_rgb", broken)
    with pytest.raises(TypeError, match="a bug in emorec"):
        load_or_failure(tmp_path / "any.jpg")
