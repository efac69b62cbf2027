"""benchmarks/bench_fit.py on a dataset too small for its folds: the splitter's one-line error
(naming the classes, the minimum per class and --limit), not scikit-learn's test_size error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from emorec.data.manifest import Manifest, Sample
from emorec.errors import EmorecError

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_fit  # noqa: E402

NAMES = ["amusement", "anger", "awe", "contentment", "disgust", "fear"]


def test_folds_of_too_few_images_per_class_name_the_minimum_and_the_fix():
    """6 classes of 5 images: scikit-learn's 15% val split of a fold's 24 training images is 4
    images, fewer than the classes ("test_size = 4 should be greater or equal to ... 6")."""
    with pytest.raises(EmorecError, match=r"^emotion6 is too small to split: classes amusement \(5 images\), .*fear "
                                          r"\(5 images\) have fewer than the (\d+) images per class a split needs; "
                                          r"5 folds with a 15% val split need at least \d+ images in all: raise "
                                          r"--limit$") as raised:
        bench_fit.checked_folds(np.repeat(np.arange(6), 5), NAMES, 5, "emotion6")
    minimum = int(raised.value.args[0].split("fewer than the ")[1].split()[0])
    folds = bench_fit.checked_folds(np.repeat(np.arange(6), minimum), NAMES, 5, "emotion6")
    assert len(folds) == 5, "the minimum named is enough"


def test_bench_fit_prints_the_error_on_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    import bench_accuracy

    weights = tmp_path / "weights" / "tf_efficientnet_lite0" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")  # only looked for: the error comes before any model is built
    tiny = Manifest([Sample(f"/d/{n}_{i}.jpg", n, "train") for n in NAMES for i in range(5)], "emotion6")
    monkeypatch.setattr(bench_fit, "SHARED", tmp_path)
    monkeypatch.setattr(bench_accuracy, "load_manifest", lambda *a, **k: tiny)

    code = bench_fit.main(["--limit", "30", "--work-dir", str(tmp_path / "work"), "--results", str(tmp_path / "r")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 2 and len(out) == 1 and out[0].startswith("fit: emotion6 is too small to split: ")
    assert "raise --limit" in out[0]
