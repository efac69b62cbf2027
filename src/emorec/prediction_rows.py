"""Predictions as rows: a `Prediction` (a path and its most probable labels), written one row per
image to CSV (path, label_1, probability_1, ...) or JSON Lines by `PredictionWriter`, or printed
as one aligned console line by `format_prediction`.

Below every command that predicts (images, faces, and whatever streams images next), so each
writes the same columns; `faces.predict.FacePredictionWriter` adds its face columns in front.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from emorec.errors import EmorecError


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (label, probability), most probable first


class PredictionWriter:
    """Write predictions as CSV (path, label_1, probability_1, ...) or JSON Lines, by extension.
    Subclasses that write other rows name their leading columns in `LEAD_COLUMNS`."""

    LEAD_COLUMNS: tuple[str, ...] = ("path",)

    def __init__(self, path: str | Path, top_k: int):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise EmorecError(f"output {self.path} must end in .csv or .jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("w", newline="")
        self.jsonl = suffix == ".jsonl"
        if not self.jsonl:
            self.csv = csv.writer(self.file)
            header = list(self.LEAD_COLUMNS)
            for i in range(1, top_k + 1):
                header += [f"label_{i}", f"probability_{i}"]
            self.csv.writerow(header)
            self.width = len(header)

    def write(self, prediction: Prediction) -> None:
        if self.jsonl:
            record = {"path": prediction.path, "predictions": [{"label": l, "probability": round(p, 6)} for l, p in prediction.top]}
            self.file.write(json.dumps(record) + "\n")
        else:
            row = [prediction.path]
            for label, prob in prediction.top:
                row += [label, f"{prob:.6f}"]
            self.csv.writerow(row)

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_prediction(prediction: Prediction, width: int) -> str:
    """One aligned console line: path, then `label probability` pairs."""
    guesses = "  ".join(f"{label:<12} {prob:6.1%}" for label, prob in prediction.top)
    return f"{prediction.path:<{width}}  {guesses}"
