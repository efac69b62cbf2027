"""`emorec data check | split | cache` from the command line: output, files, exit codes."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from emorec.cli import main


def _jpeg(path: Path, colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), colour).save(path)
    return path


def _bad_source(kind: str, root: Path) -> tuple[list[str], str]:
    """(command line, expected words) for each kind of bad input."""
    if kind == "nonexistent":
        return ["data", "check", str(root / "nope")], "dataset not found"
    if kind == "empty folder":
        (root / "empty").mkdir()
        return ["data", "check", str(root / "empty")], "no images found"
    if kind == "empty class folder":
        _jpeg(root / "ds" / "joy" / "a.jpg")
        (root / "ds" / "fear").mkdir()
        return ["data", "check", str(root / "ds")], "class folder"
    if kind == "csv without label":
        (root / "m.csv").write_text("path,emotion\na.jpg,joy\n")
        return ["data", "check", str(root / "m.csv")], "no label column"
    if kind == "unknown split":
        _jpeg(root / "a.jpg")
        (root / "m.csv").write_text("path,label,split\na.jpg,joy,holdout\n")
        return ["data", "split", str(root / "m.csv"), "-o", str(root / "s.csv")], "unknown split 'holdout'"
    if kind == "single class":
        _jpeg(root / "ds" / "joy" / "a.jpg")
        return ["data", "check", str(root / "ds")], "single class"
    if kind == "class without val":
        for i in range(10):
            _jpeg(root / "ds" / "joy" / f"{i}.jpg", (i * 20, 0, 0))
        _jpeg(root / "ds" / "fear" / "0.jpg", (0, 200, 0))
        return ["data", "split", str(root / "ds"), "-o", str(root / "s.csv"), "--no-progress"], \
            "class fear (1 image) has fewer than the 3 images per class a split needs"
    if kind == "missing files":
        (root / "m.csv").write_text("path,label\n" + "".join(f"gone{i}.jpg,joy\n" for i in range(7)))
        return ["data", "check", str(root / "m.csv")], "7 of 7 images"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["nonexistent", "empty folder", "empty class folder", "csv without label",
                                  "unknown split", "single class", "class without val", "missing files"])
def test_bad_input_exits_2_with_one_line(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, words = _bad_source(kind, tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emorec: error:") and words in err and "\n" not in err and ";" in err
    assert "Traceback" not in err


def test_check_prints_counts_and_writes_lists_to_the_default_folder(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "check", str(tiny_dataset), "--no-progress", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "amusement" in out and "imbalance    1.0" in out and "emorec-check/tiny" in out
    summary = json.loads((tmp_path / "emorec-check" / "tiny" / "summary.json").read_text())
    assert summary["images"] == 48 and summary["exact_duplicate_groups"] == 0


def test_split_writes_a_manifest_that_reads_back(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "splits.csv"
    assert main(["data", "split", str(tiny_dataset), "--output", str(out), "--seed", "1", "--no-progress"]) == 0
    assert "train" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 48 and {r["split"] for r in rows} == {"train", "val", "test"}
    per_class_val = {r["label"] for r in rows if r["split"] == "val"}
    assert per_class_val == {"amusement", "anger", "awe", "fear"}
    assert json.loads((tmp_path / "label_map.json").read_text())["names"][0] == "amusement"


def test_data_without_subcommand_shows_help(capsys):
    assert main(["data"]) == 2
    assert "check" in capsys.readouterr().out


def test_check_on_emotion6(emotion6, tmp_path, capsys):
    assert main(["data", "check", str(emotion6), "--report", str(tmp_path / "r"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["images"] == 1584 and len(summary["classes"]) == 6
    assert summary["unreadable"] == summary["zero_byte"] == summary["truncated"] == 0


@pytest.mark.slow
def test_check_on_all_of_fer2013_finds_its_duplicates_in_under_a_minute(fer2013, tmp_path, capsys):
    start = time.perf_counter()
    assert main(["data", "check", str(fer2013 / "labels.csv"), "--report", str(tmp_path / "r"), "--no-progress"]) == 0
    elapsed = time.perf_counter() - start
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["images"] == 32298 and summary["modes"] == {"L": 32298}
    assert summary["classes"]["disgust"] == 492 and summary["imbalance_ratio"] > 15
    # FER-2013 is known to hold duplicates across its splits and with conflicting labels.
    assert summary["exact_duplicate_groups"] > 100
    assert sum(summary["cross_split_groups"].values()) > 50
    assert sum(summary["conflicting_label_groups"].values()) > 10
    dupes = list(csv.DictReader((tmp_path / "r" / "duplicates.csv").open()))
    assert any(r["cross_split"] == "1" for r in dupes)
    assert elapsed < 60, f"data check took {elapsed:.0f} s"
