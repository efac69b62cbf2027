"""Prediction rows: one CSV or JSON Lines row per image, the same columns for every command."""

from __future__ import annotations

import csv
import json

import pytest

from emorec.errors import EmorecError
from emorec.prediction_rows import Prediction, PredictionWriter, format_prediction

ROWS = [Prediction("a.jpg", [("joy", 0.75), ("fear", 0.25)]), Prediction("b.jpg", [("fear", 0.5), ("joy", 0.5)])]


def test_csv_has_a_path_column_then_label_probability_pairs(tmp_path):
    with PredictionWriter(tmp_path / "out" / "p.csv", top_k=2) as writer:
        for row in ROWS:
            writer.write(row)
    with (tmp_path / "out" / "p.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows == [["path", "label_1", "probability_1", "label_2", "probability_2"],
                    ["a.jpg", "joy", "0.750000", "fear", "0.250000"], ["b.jpg", "fear", "0.500000", "joy", "0.500000"]]


def test_jsonl_has_one_record_per_image(tmp_path):
    with PredictionWriter(tmp_path / "p.jsonl", top_k=2) as writer:
        writer.write(ROWS[0])
    [record] = map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())
    assert record == {"path": "a.jpg", "predictions": [{"label": "joy", "probability": 0.75},
                                                       {"label": "fear", "probability": 0.25}]}


def test_another_extension_is_refused(tmp_path):
    with pytest.raises(EmorecError, match=r"\.csv or \.jsonl"):
        PredictionWriter(tmp_path / "p.txt", top_k=1)


def test_console_line_is_aligned_on_the_path_width():
    assert format_prediction(ROWS[0], 8) == "a.jpg     joy           75.0%  fear          25.0%"
