"""Part files of a sharded job: a kill leaves whole records and maybe a torn one; a restart keeps
the whole ones up to a batch boundary, and parts of another job are refused, not reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emorec.errors import EmorecError
from emorec.part_files import ArrayPart, JsonLinesPart, PartsFolder, read_array_part, read_json_lines
from emorec.shards import Shard


def test_a_torn_last_line_is_cut_and_the_rank_resumes_at_a_batch_boundary(tmp_path):
    path = tmp_path / "rank.jsonl"
    mine = range(1, 40, 2)  # rank 1 of 2
    path.write_text("".join(json.dumps({"i": i, "top": [["awe", 0.5]]}) + "\n" for i in mine[:5]) + '{"i": 11, "to')
    part = JsonLinesPart(path, mine, batch_size=2)
    assert part.done == 4 and path.read_text().count("\n") == 4 and path.read_text().endswith("\n")
    part.append([{"i": i, "skipped": "empty file"} for i in mine[4:6]])
    part.close()
    assert [r["i"] for r in read_json_lines(path)] == list(mine[:6])


def test_records_of_other_inputs_end_the_part(tmp_path):
    path = tmp_path / "rank.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in (0, 2, 5, 6)))
    assert JsonLinesPart(path, range(0, 40, 2), batch_size=1).done == 2  # i=5 is not rank 0's third input
    assert path.read_text().count("\n") == 2


def test_zeros_a_crash_leaves_behind_binary_records_are_not_taken_for_records(tmp_path):
    dtype = np.dtype([("row", "<i8"), ("valid", "?"), ("pooled", "float32", (2, 3))])
    path = tmp_path / "train.rank.bin"
    records = np.zeros(3, dtype=dtype)
    records["row"], records["valid"], records["pooled"] = [0, 2, 4], True, 1.0
    path.write_bytes(records.tobytes() + bytes(2 * dtype.itemsize) + b"\x01\x02")
    part = ArrayPart(path, dtype, range(0, 20, 2), batch_size=1)
    assert part.done == 3 and path.stat().st_size == 3 * dtype.itemsize
    part.close()
    assert read_array_part(path, dtype, 3)["row"].tolist() == [0, 2, 4]
    with pytest.raises(EmorecError, match="cannot see all of .*train.rank.bin"):
        read_array_part(path, dtype, 4)


def test_parts_of_another_job_are_refused_with_the_folder_and_the_fix(tmp_path):
    folder = tmp_path / "preds.csv.parts"
    PartsFolder(folder, {"world_size": 2, "top_k": 3}, Shard()).claim()
    (folder / "rank-00000-of-00002.jsonl").write_text('{"i": 0}\n')
    PartsFolder(folder, {"world_size": 2, "top_k": 3}, Shard()).claim()  # the same job: parts kept
    assert (folder / "rank-00000-of-00002.jsonl").is_file()
    with pytest.raises(EmorecError) as refused:
        PartsFolder(folder, {"world_size": 4, "top_k": 3}, Shard()).claim()
    message = str(refused.value)
    assert "\n" not in message and str(folder) in message and "world_size" in message and "top_k" not in message
    assert f"delete {folder}" in message
    assert (folder / "rank-00000-of-00002.jsonl").is_file(), "a refused job touches nothing"


def test_part_files_without_a_job_file_are_cleared_when_a_job_starts(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "train.rank-00001-of-00002.bin").write_bytes(b"old")
    PartsFolder(folder, {"world_size": 2}, Shard()).claim()
    assert sorted(p.name for p in folder.iterdir()) == ["job.json"]
