"""The search's time estimates: decoding is measured on the data's own files, not assumed."""

from __future__ import annotations

import numpy as np
from PIL import Image

from emorec.fit.budget import DECODE_S, Estimates, decode_seconds, refit_reserve


def _jpegs(folder, side: int, count: int) -> list[str]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def test_decode_time_is_measured_on_the_files_and_drives_the_extraction_estimate(tmp_path):
    small = decode_seconds(_jpegs(tmp_path / "small", 48, 6), 64)
    large = decode_seconds(_jpegs(tmp_path / "large", 1600, 6), 64)
    assert 0 < small < large
    assert small < DECODE_S  # the old flat figure: 48 px faces decode far faster
    counts = {"train": 1000, "val": 200, "test": 200}
    fast, slow = Estimates(counts, 64, 2, "cpu", small), Estimates(counts, 64, 2, "cpu", large)
    fast.per_image["b"] = slow.per_image["b"] = 0.001  # the forward time, measured elsewhere
    assert fast.extraction("b") < slow.extraction("b")
    assert fast.finetune_epoch("b") < slow.finetune_epoch("b")


def test_unreadable_samples_fall_back_to_the_default(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    assert decode_seconds([str(bad)], 64) == DECODE_S


def test_refit_reserve_is_one_fit_of_the_slowest_probe_not_its_whole_cross_validation():
    # 600 s of cross-validation with 5 folds is 6 fits of ~100 s; the refit on all of train + val
    # is one fit on 5/4 of a fold's data, kept twice over.
    assert refit_reserve([], 5) == 0.0
    one = refit_reserve([300.0, 600.0], 5)
    assert one == 2.0 * 100.0 * 5 / 4
    assert one < 600.0  # what used to be held back
    assert refit_reserve([600.0], 5, members=3) == 3 * one  # the ensemble refits one probe per backbone
    assert refit_reserve([600.0], 2) > refit_reserve([600.0], 5)  # fewer folds: each fit sees more of the data
