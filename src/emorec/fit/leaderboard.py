"""`leaderboard.csv`: one row per candidate, written after each one, read back on resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from emorec.fit.candidates import SETTING_COLUMNS
from emorec.training.run_dir import write_csv_rows

COLUMNS = ("candidate", "kind", "backbone", "feature_levels", "pooling", "head", *SETTING_COLUMNS,
           "best_epoch", "val_macro_f1", "val_accuracy", "seconds", "status", "note")
DONE = "done"


class Leaderboard:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, str]] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]

    def done(self, candidate_id: str) -> dict[str, str] | None:
        """The finished row of `candidate_id`, if any (skipped or failed ones are tried again)."""
        return next((r for r in self.rows if r["candidate"] == candidate_id and r["status"] == DONE), None)

    def record(self, row: dict) -> None:
        """Add or replace the row of row['candidate'] and rewrite the file atomically."""
        clean = {k: _cell(row.get(k, "")) for k in COLUMNS}
        self.rows = [r for r in self.rows if r["candidate"] != clean["candidate"]] + [clean]
        write_csv_rows(self.path, COLUMNS, self.rows)

    def best(self) -> dict[str, str] | None:
        """The finished row with the highest validation macro-F1 (the earlier, cheaper one on a tie)."""
        finished = [r for r in self.rows if r["status"] == DONE and _number(r["val_macro_f1"]) is not None]
        return max(finished, key=lambda r: _number(r["val_macro_f1"]), default=None)


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
