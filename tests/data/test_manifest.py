"""read_manifest reads the three layouts into one Manifest and rejects bad input in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from emorec.data.manifest import Manifest, Sample, check_files_exist, read_manifest
from emorec.errors import EmorecError


def _jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    return path


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_imagefolder_gives_absolute_paths_labels_and_no_split(tiny_dataset):
    m = read_manifest(tiny_dataset)
    assert len(m.samples) == 48
    assert m.labels() == ["amusement", "anger", "awe", "fear"]
    assert m.class_counts() == {"amusement": 12, "anger": 12, "awe": 12, "fear": 12}
    assert all(Path(s.path).is_absolute() and s.split is None for s in m.samples)
    assert not m.has_splits and m.splits() == {None}


def test_split_imagefolder_reads_split_names_and_aliases(tmp_path):
    for split in ("train", "valid", "test"):
        for label in ("joy", "fear"):
            _jpeg(tmp_path / "ds" / split / label / f"{label}_1.jpg")
    m = read_manifest(tmp_path / "ds")
    assert m.splits() == {"train", "val", "test"} and m.has_splits
    assert m.subset("val").class_counts() == {"fear": 1, "joy": 1}


def test_unknown_split_folder_is_an_error(tmp_path):
    _jpeg(tmp_path / "ds" / "train" / "joy" / "a.jpg")
    _jpeg(tmp_path / "ds" / "holdout" / "joy" / "b.jpg")
    with pytest.raises(EmorecError, match="unknown split 'holdout'.*train, val or test"):
        read_manifest(tmp_path / "ds")


def test_flat_folder_takes_the_label_before_the_first_underscore(tmp_path):
    _jpeg(tmp_path / "flat" / "awe_0001.jpg")
    _jpeg(tmp_path / "flat" / "fear_x_2.jpg")
    (tmp_path / "flat" / "notes.txt").write_text("ignored")
    m = read_manifest(tmp_path / "flat")
    assert sorted((Path(s.path).name, s.label) for s in m.samples) == [("awe_0001.jpg", "awe"), ("fear_x_2.jpg", "fear")]


def test_flat_file_without_label_prefix_is_an_error(tmp_path):
    _jpeg(tmp_path / "flat" / "awe_1.jpg")
    _jpeg(tmp_path / "flat" / "photo.jpg")
    with pytest.raises(EmorecError, match="photo.jpg.*<label>_<anything>"):
        read_manifest(tmp_path / "flat")


def test_csv_paths_are_relative_to_the_csv_or_images_root(tmp_path):
    _jpeg(tmp_path / "imgs" / "a.jpg")
    _jpeg(tmp_path / "imgs" / "b.jpg")
    m = read_manifest(_write_csv(tmp_path / "imgs" / "m.csv", [["path", "label", "split"], ["a.jpg", "joy", "train"],
                                                                ["b.jpg", "fear", "validation"]]))
    assert [(Path(s.path).name, s.label, s.split) for s in m.samples] == [("a.jpg", "joy", "train"), ("b.jpg", "fear", "val")]
    other = _write_csv(tmp_path / "elsewhere.csv", [["path", "label"], ["a.jpg", "joy"], ["b.jpg", "fear"]])
    m = read_manifest(other, images_root=tmp_path / "imgs")
    assert m.samples[0].path == str((tmp_path / "imgs" / "a.jpg").resolve()) and m.samples[0].split is None


def test_folder_with_labels_csv_is_read_through_the_csv(tmp_path):
    _jpeg(tmp_path / "ds" / "images" / "joy" / "a.jpg")
    _jpeg(tmp_path / "ds" / "images" / "fear" / "b.jpg")
    _write_csv(tmp_path / "ds" / "labels.csv", [["path", "label"], ["images/joy/a.jpg", "joy"], ["images/fear/b.jpg", "fear"]])
    assert read_manifest(tmp_path / "ds").labels() == ["fear", "joy"]


@pytest.mark.parametrize("header, message", [(["file", "label"], "no path column"),
                                             (["path", "emotion"], "no label column")])
def test_csv_without_path_or_label_column_is_an_error(tmp_path, header, message):
    path = _write_csv(tmp_path / "m.csv", [header, ["a.jpg", "joy"]])
    with pytest.raises(EmorecError, match=f"{message}.*path,label"):
        read_manifest(path)


def test_csv_with_unknown_split_name_names_the_line(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    path = _write_csv(tmp_path / "m.csv", [["path", "label", "split"], ["a.jpg", "joy", "dev"]])
    with pytest.raises(EmorecError, match="unknown split 'dev' in .*line 2"):
        read_manifest(path)


def test_missing_files_are_an_error_listing_the_first_few_and_the_count(tmp_path):
    _jpeg(tmp_path / "present.jpg")
    rows = [["path", "label"], ["present.jpg", "joy"]] + [[f"gone_{i}.jpg", "joy"] for i in range(8)]
    with pytest.raises(EmorecError) as info:
        read_manifest(_write_csv(tmp_path / "m.csv", rows))
    text = str(info.value)
    assert "8 of 9 images" in text and "gone_0.jpg" in text and "gone_4.jpg" in text and "gone_7.jpg" not in text
    assert "--images-root" in text


@pytest.mark.parametrize("make", ["nonexistent", "empty", "empty_class"])
def test_bad_sources_are_one_line_errors(tmp_path, make):
    if make == "nonexistent":
        source, match = tmp_path / "nope", "dataset not found"
    elif make == "empty":
        (source := tmp_path / "empty").mkdir()
        match = "no images found"
    else:
        _jpeg(tmp_path / "ds" / "joy" / "a.jpg")
        (tmp_path / "ds" / "fear").mkdir()
        (tmp_path / "ds" / "fear" / "readme.txt").write_text("x")
        source, match = tmp_path / "ds", "class folder .*fear has no images"
    with pytest.raises(EmorecError, match=match) as info:
        read_manifest(source)
    assert "\n" not in str(info.value) and ";" in str(info.value)  # problem; fix


def test_to_csv_round_trips_and_content_hash_tracks_splits(tmp_path, tiny_dataset):
    m = read_manifest(tiny_dataset)
    m = Manifest([Sample(s.path, s.label, "train" if i % 2 else "val") for i, s in enumerate(m.samples)], m.source)
    back = read_manifest(m.to_csv(tmp_path / "out" / "m.csv"))
    assert back.samples == m.samples
    assert back.content_hash() == m.content_hash()
    rel = read_manifest(m.to_csv(tiny_dataset / "rel.csv", relative=True))
    assert rel.samples == m.samples
    assert not (tiny_dataset / "rel.csv").read_text().splitlines()[1].startswith("/")
    moved = Manifest([Sample(s.path, s.label, "test") for s in m.samples], m.source)
    assert moved.content_hash() != m.content_hash()


def test_check_files_exist_passes_for_present_files(tiny_dataset):
    check_files_exist(read_manifest(tiny_dataset))
