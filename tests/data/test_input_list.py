"""`read_input_list` (`predict --inputs-from`): a text list or a CSV with a 'path' column, paths
relative to the list; anything else is one line naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from emorec.data.inputs import read_input_list
from emorec.errors import EmorecError


def test_a_text_list_names_one_image_per_line_relative_to_the_list(tmp_path):
    listed = tmp_path / "lists" / "images.txt"
    listed.parent.mkdir()
    listed.write_text("# photos of the study\na.jpg\n\n  sub/b.png  \n/data/c.jpg\n")
    assert read_input_list(listed) == [listed.parent / "a.jpg", listed.parent / "sub/b.png", Path("/data/c.jpg")]


def test_a_csv_list_is_read_from_its_path_column(tmp_path):
    listed = tmp_path / "images.csv"
    listed.write_text("label,path\nawe,a.jpg\nfear,/data/b.jpg\n")
    assert read_input_list(listed) == [tmp_path / "a.jpg", Path("/data/b.jpg")]


@pytest.mark.parametrize("name,content,expected", [
    ("images.csv", "file,label\na.jpg,awe\n", "no 'path' column"),
    ("images.txt", None, "not found"),
    ("images.txt", b"\xff\xd8\xff\xe0 a jpeg, not a list", "not UTF-8 text"),
])
def test_a_bad_list_is_one_line_naming_the_file_and_the_fix(tmp_path, name, content, expected):
    listed = tmp_path / name
    if isinstance(content, str):
        listed.write_text(content)
    elif content is not None:
        listed.write_bytes(content)
    with pytest.raises(EmorecError) as error:
        read_input_list(listed)
    message = str(error.value)
    assert expected in message and str(listed) in message and "'path'" in message and "\n" not in message
