"""check_dataset finds every kind of problem the issue lists; split_dataset keeps copies together."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from edge_images import cmyk_jpeg, gray16_png, palette_png_with_transparency, truncated_jpeg, zero_byte
from PIL import Image

from emorec.config import DataConfig
from emorec.data.check import check_dataset, default_report_dir, split_dataset
from emorec.data.hashing import near_pairs
from emorec.data.manifest import read_manifest
from emorec.errors import EmorecError


def _photo(path: Path, seed: int, size: int = 64, quality: int = 92) -> Path:
    """A smooth random picture: distinct per seed, and still itself after re-encoding."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (6, 6, 3), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    small.resize((size, size), Image.BICUBIC).save(path, quality=quality)
    return path


@pytest.fixture
def messy(tmp_path) -> Path:
    """CSV dataset: 2 classes x 10 distinct photos plus planted problems."""
    root = tmp_path / "messy"
    rows = []
    for c, label in enumerate(["joy", "fear"]):
        for i in range(10):
            p = _photo(root / label / f"{i}.jpg", seed=100 * c + i)
            rows.append((p, label, "val" if i == 0 else "train"))
    joy0, joy1, fear1 = root / "joy" / "0.jpg", root / "joy" / "1.jpg", root / "fear" / "1.jpg"
    # Exact copy of a val image in train: leakage.
    shutil.copy(joy0, root / "joy" / "copy_of_0.jpg")
    rows.append((root / "joy" / "copy_of_0.jpg", "joy", "train"))
    # Re-encoded copy (different bytes and pixels) of train image joy/1 placed in test: near leakage.
    Image.open(joy1).save(root / "joy" / "reencoded_1.jpg", quality=70)
    rows.append((root / "joy" / "reencoded_1.jpg", "joy", "test"))
    # The same picture under two labels.
    shutil.copy(fear1, root / "joy" / "mislabelled.jpg")
    rows.append((root / "joy" / "mislabelled.jpg", "joy", "train"))
    odd = root / "odd"
    odd.mkdir()
    for make, name in [(truncated_jpeg, "trunc.jpg"), (zero_byte, "empty.jpg"), (cmyk_jpeg, "cmyk.jpg"),
                       (palette_png_with_transparency, "pal.png"), (gray16_png, "g16.png")]:
        rows.append((make(odd / name), "fear", "train"))
    _photo(odd / "tiny.jpg", seed=999, size=16)
    rows.append((odd / "tiny.jpg", "fear", "train"))
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows((p.relative_to(root).as_posix(), label, split) for p, label, split in rows)
    return root / "labels.csv"


def test_check_finds_broken_odd_and_tiny_images(messy):
    report = check_dataset(read_manifest(messy), workers=1, min_side=20, progress=False)  # edge images are 40x30
    kinds = {(Path(p.path).name, p.kind) for p in report.problems}
    assert ("trunc.jpg", "truncated") in kinds and ("empty.jpg", "zero-byte") in kinds
    assert {("cmyk.jpg", "mode"), ("pal.png", "mode"), ("g16.png", "mode"), ("tiny.jpg", "tiny")} <= kinds
    assert report.counts("unreadable") == 0 and report.counts("tiny") == 1
    s = report.summary()
    assert s["classes"] == {"fear": 16, "joy": 13}
    assert s["imbalance_ratio"] == pytest.approx(16 / 13, abs=1e-3)
    assert s["modes"]["CMYK"] == 1 and s["modes"]["P"] == 1 and s["modes"]["I;16"] == 1


def test_check_groups_exact_and_near_duplicates_and_flags_leakage_and_conflicts(messy):
    report = check_dataset(read_manifest(messy), workers=1, progress=False)
    names = [sorted(Path(report.manifest.samples[i].path).name for i in g.members) for g in report.groups]
    assert sorted(names) == [["0.jpg", "copy_of_0.jpg"], ["1.jpg", "mislabelled.jpg"],
                             ["1.jpg", "reencoded_1.jpg"]]
    by_name = {tuple(n): g for n, g in zip(names, report.groups)}
    leak = by_name["0.jpg", "copy_of_0.jpg"]
    assert leak.exact and leak.cross_split and not leak.conflicting
    near = by_name["1.jpg", "reencoded_1.jpg"]
    assert not near.exact and near.cross_split
    conflict = by_name["1.jpg", "mislabelled.jpg"]
    assert conflict.exact and conflict.conflicting
    s = report.summary()
    assert s["cross_split_groups"] == {"exact": 1, "near": 1}
    assert s["conflicting_label_groups"] == {"exact": 1, "near": 0}


def test_report_files_are_written_and_the_text_names_them(messy, tmp_path):
    report = check_dataset(read_manifest(messy), workers=1, progress=False)
    files = report.write(tmp_path / "out")
    rows = list(csv.DictReader(open(files["duplicates.csv"])))
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"exact", "near"}
    problems = list(csv.DictReader(open(files["problems.csv"])))
    assert {"truncated", "zero-byte", "mode", "tiny"} == {r["problem"] for r in problems}
    text = str(report)
    assert "imbalance" in text and "2 groups in two splits" in text and str(tmp_path / "out") in text


def test_check_uses_a_process_pool_with_the_same_result(messy):
    one = check_dataset(read_manifest(messy), workers=1, progress=False)
    two = check_dataset(read_manifest(messy), workers=2, progress=False)
    assert one.facts == two.facts and one.summary() == two.summary()


def test_split_keeps_duplicate_groups_in_one_split_and_drops_unreadable(messy, tmp_path):
    clean, stats = split_dataset(read_manifest(messy), tmp_path / "s" / "splits.csv", DataConfig(), workers=1,
                                 progress=False)
    split_of = {Path(s.path).relative_to(messy.parent).as_posix(): s.split for s in clean.samples}
    assert split_of["joy/copy_of_0.jpg"] == split_of["joy/0.jpg"] == "val"  # held-out split wins
    assert split_of["joy/1.jpg"] == split_of["joy/reencoded_1.jpg"] == "test"
    assert "odd/trunc.jpg" not in split_of and "odd/empty.jpg" not in split_of
    assert stats["dropped_unreadable"] == 2 and stats["moved_to_keep_groups_together"] == 2
    back = read_manifest(tmp_path / "s" / "splits.csv")
    assert back.samples == clean.samples and (tmp_path / "s" / "label_map.json").is_file()


def test_split_output_must_be_csv_and_single_class_is_an_error(tiny_dataset, tmp_path):
    with pytest.raises(EmorecError, match="must be a .csv"):
        split_dataset(read_manifest(tiny_dataset), tmp_path / "x.txt", DataConfig(), progress=False)
    with pytest.raises(EmorecError, match="single class"):
        check_dataset(read_manifest(tiny_dataset / "awe"), progress=False)


def test_near_pairs_is_exact_on_hamming_distance():
    hashes = [0, 0b111, 0b1111, -1]
    assert near_pairs(hashes, 3).tolist() == [[0, 1], [1, 2]]
    assert near_pairs(hashes, 4).tolist() == [[0, 1], [0, 2], [1, 2]]


def test_default_report_dir_is_named_after_the_dataset(tmp_path, tiny_dataset):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "labels.csv").write_text("path,label\n")
    (tmp_path / "mine.csv").write_text("path,label\n")
    assert default_report_dir(tmp_path / "ds" / "labels.csv") == Path("emorec-check/ds")
    assert default_report_dir(tmp_path / "mine.csv") == Path("emorec-check/mine")
    assert default_report_dir(tiny_dataset) == Path("emorec-check/tiny")
