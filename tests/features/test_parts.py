"""A rank's part of a sharded extraction: a record for every image of its shard, unreadable ones
included, merged into the cache's rows; a restarted rank goes on after its last whole batch."""

from __future__ import annotations

import numpy as np

from emorec.features.parts import PartSink, merge_part, record_dtype

LAYOUT = record_dtype(views=2, channels=3, grid=0, grid_channels=3, dtype="float32")


def vectors(*values: float) -> np.ndarray:
    return np.asarray(values, dtype="float32")[:, None, None] * np.ones((1, 2, 3), dtype="float32")


def test_unreadable_images_get_records_and_the_merge_puts_every_row_in_its_place(tmp_path):
    rows = range(1, 10, 2)  # rank 1 of 2 over a 10-image split
    sink = PartSink(tmp_path / "train.bin", LAYOUT, rows, batch_size=2)
    sink.write(np.array([1]), vectors(3.0), None)  # local 0 (row 1) was unreadable
    sink.write(np.array([3]), vectors(7.0), None)  # so was local 2 (row 5); local 4 (row 9) at the end
    sink.close()
    arrays = {"pooled": np.zeros((10, 2, 3), dtype="float32"), "valid": np.zeros(10, dtype=bool)}
    merge_part(arrays, tmp_path / "train.bin", LAYOUT, len(rows))
    assert np.flatnonzero(arrays["valid"]).tolist() == [3, 7]
    assert arrays["pooled"][:, 0, 0].tolist() == [0, 0, 0, 3, 0, 0, 0, 7, 0, 0]


def test_a_restarted_rank_goes_on_after_its_last_whole_batch(tmp_path):
    rows = range(0, 20, 2)
    sink = PartSink(tmp_path / "train.bin", LAYOUT, rows, batch_size=2)
    sink.write(np.array([0, 1]), vectors(1.0, 2.0), None)
    sink.write(np.array([2]), vectors(3.0), None)  # half of the second batch, then killed
    with open(tmp_path / "train.bin", "ab") as f:
        f.write(b"\x00" * 7)  # and a torn record
    again = PartSink(tmp_path / "train.bin", LAYOUT, rows, batch_size=2)
    assert list(again.todo) == list(rows[2:])
    again.write(np.arange(8), vectors(*range(3, 11)), None)
    again.close()
    arrays = {"pooled": np.zeros((20, 2, 3), dtype="float32"), "valid": np.zeros(20, dtype=bool)}
    merge_part(arrays, tmp_path / "train.bin", LAYOUT, len(rows))
    assert arrays["pooled"][rows, 0, 0].tolist() == list(range(1, 11)) and arrays["valid"][rows].all()
