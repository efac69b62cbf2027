"""`emorec predict --inputs-from FILE`, and what predict refuses under torchrun (checked before any
process group is joined, so a plain WORLD_SIZE in the environment is enough here)."""

from __future__ import annotations

import csv

import pytest

from emorec.cli import main


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_a_list_predicts_the_rows_of_the_folder_it_lists(fake_run, tiny_dataset, tmp_path, kind):
    folder = tiny_dataset / "awe"
    images = sorted(folder.iterdir())
    listed = folder / f"list.{kind}"  # relative entries: relative to the list's folder
    header = "path,label\n" if kind == "csv" else "# awe photos\n"
    listed.write_text(header + "".join(f"{p.name}{',awe' if kind == 'csv' else ''}\n" for p in images))
    from_list, from_folder = tmp_path / "list.csv", tmp_path / "folder.csv"
    assert main(["predict", str(fake_run), "--inputs-from", str(listed), "--output", str(from_list)]) == 0
    assert main(["predict", str(fake_run), *map(str, images), "--output", str(from_folder)]) == 0
    assert _rows(from_list) == _rows(from_folder) and len(_rows(from_list)) == 12


def test_a_csv_list_without_a_path_column_is_one_line_naming_it(fake_run, tmp_path, capsys):
    listed = tmp_path / "study.csv"
    listed.write_text("file,label\na.jpg,awe\n")
    assert main(["predict", str(fake_run), "--inputs-from", str(listed)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(listed) in err and "'path' column" in err


@pytest.mark.parametrize("extra,refusal", [
    (["--faces"], "--faces is not supported under torchrun (2 ranks)"),
    (["VIDEO"], "video inputs"),
    ([], "add --output"),
])
def test_under_torchrun_faces_videos_and_console_output_are_refused_in_one_line(fake_run, tiny_dataset, tmp_path,
                                                                               monkeypatch, capsys, extra, refusal):
    monkeypatch.setenv("WORLD_SIZE", "2")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    output = [] if not extra else ["--output", str(tmp_path / "p.csv")]
    args = [str(video) if a == "VIDEO" else a for a in extra]
    assert main(["predict", str(fake_run), str(tiny_dataset / "awe"), *args, *output]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and refusal in err
