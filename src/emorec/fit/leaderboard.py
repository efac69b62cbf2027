"""`leaderboard.csv`: one row per candidate, written from the study's trials (`study.py`) after
each one; and the rule that picks the leader from it. A pruned fine-tune is listed with its last
score and never leads.

Probes (and their ensembles) carry a cross-validated macro-F1 over train + val (`crossval.py`);
trainer heads and the LP-FT fine-tune only their score on the one val split, where they also
chose their best epoch. The leader is the probe with the best cross-validated score unless the
best trainer candidate beats that probe's own val score by one standard error of a val score
(Breiman's one-standard-error rule: keep the simpler, better-measured model unless the other is
clearly better on the evidence there is) plus what the best of k val scores is expected to gain
by chance alone, in standard errors the expected maximum of k standard normals
(`expected_maximum`: 0 for one, 1.5 for 10, 2.1 for 36). Without it the rule compared the best of
36 trained heads to one probe: on Emotion6 fold 0 (3 backbones, 191 val images) an MLP head 0.043
above the ensemble of probes on val took the lead and scored 54.5 test macro-F1 (the plain
probe: 54.6). Assuming the heads' errors independent makes the allowance an upper bound: they
share the val images.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import numpy as np

from emorec.fit.candidates import SETTING_COLUMNS
from emorec.training.run_dir import write_csv_rows

COLUMNS = ("candidate", "kind", "backbone", "feature_levels", "pooling", "head", *SETTING_COLUMNS,
           "best_epoch", "val_macro_f1", "val_accuracy", "cv_macro_f1", "seconds", "status", "note")
DONE = "done"


@functools.lru_cache(maxsize=None)
def expected_maximum(k: int) -> float:
    """E[max of k independent standard normals] (0 for k <= 1), by numerical integration."""
    if k <= 1:
        return 0.0
    x = np.linspace(-12.0, 12.0, 24001)
    density = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    below = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    return float(np.trapezoid(x * k * density * below ** (k - 1), x))


def one_standard_error(val_images: int) -> float:
    """The largest standard error of an accuracy-like score on `val_images` images (p = 0.5)."""
    return 0.5 / math.sqrt(max(val_images, 1))


class Leaderboard:
    def __init__(self, path: str | Path, margin: float = 0.0):
        self.path = Path(path)
        self.margin = margin  # how far a val-only candidate must beat the best cross-validated one
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

    def replace(self, rows: list[dict]) -> None:
        """The rows (the study's, `study.py`) as the whole board, written atomically."""
        self.rows = [{k: _cell(row.get(k, "")) for k in COLUMNS} for row in rows]
        write_csv_rows(self.path, COLUMNS, self.rows)

    def best_probe(self, set_name: str) -> dict[str, str] | None:
        """The finished linear probe of feature set `set_name` with the best cross-validated score
        (the best val score where the probes were scored on val alone)."""
        rows = [r for r in self.rows if r["status"] == DONE and r["kind"] == "logreg"
                and r["candidate"].startswith(f"{set_name}-logreg-")]
        key = "cv_macro_f1" if any(r.get("cv_macro_f1") for r in rows) else "val_macro_f1"
        return max((r for r in rows if r.get(key)), key=lambda r: float(r[key]), default=None)

    def contenders(self) -> list[dict[str, str]]:
        """The rows that are or may become the leader: the best cross-validated probe and the best
        val-only row. Adding rows can hand the lead from one to the other and back, so both keep
        their checkpoints; no other row can ever lead again."""
        return [r for r in self._anchor_and_challenger() if r is not None]

    def best(self) -> dict[str, str] | None:
        """The leader (module docstring); on a tie the earlier, cheaper row."""
        anchor, challenger = self._anchor_and_challenger()
        if anchor is None or (challenger is not None and _number(challenger["val_macro_f1"])
                              >= _number(anchor["val_macro_f1"]) + self.challenge_margin()):
            return challenger
        return anchor

    def challenge_margin(self) -> float:
        """How far the best val-only row must beat the anchor's val score: one standard error plus
        the chance gain of the best of the val-only rows finished (module docstring)."""
        return self.margin * (1.0 + expected_maximum(len(self._finished()[1])))

    def _finished(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """The finished rows with a val score: (those with a cross-validated one, the val-only ones)."""
        finished = [r for r in self.rows if r["status"] == DONE and _number(r["val_macro_f1"]) is not None]
        measured = [r for r in finished if _number(r.get("cv_macro_f1")) is not None]
        return measured, [r for r in finished if _number(r.get("cv_macro_f1")) is None]

    def _anchor_and_challenger(self) -> tuple[dict[str, str] | None, dict[str, str] | None]:
        """(the best row by cv_macro_f1, the best row without one by val_macro_f1); either may be None."""
        measured, val_only = self._finished()
        anchor = max(measured, key=lambda r: _number(r["cv_macro_f1"]), default=None)
        challenger = max(val_only, key=lambda r: _number(r["val_macro_f1"]), default=None)
        return anchor, challenger


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
