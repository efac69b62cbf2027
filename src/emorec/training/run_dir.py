"""The run directory `<train.output_dir>/<train.name>/`: layout, metrics CSV, log, summary.

Layout (docs/ARCHITECTURE.md): config.yaml, label_map.json, manifest.csv, metrics.csv,
train.log, tensorboard/, checkpoints/{last,best}.pt, summary.json. Only rank 0 calls these.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from emorec.errors import EmorecError

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                  "skipped_images", "bad_steps", "images_per_s", "epoch_seconds", "wall_time_s")
LOGGER_NAME = "emorec"


def check_new_run_dir(run_dir: Path) -> None:
    """A fresh run must not overwrite another run's checkpoints or metrics."""
    taken = [p for p in (run_dir / "checkpoints" / "last.pt", run_dir / "metrics.csv") if p.exists()]
    if taken:
        raise EmorecError(f"run directory {run_dir} already holds a run ({taken[0].name}); continue it with "
                          f"`emorec train --resume {run_dir}` or choose another --set train.name=...")


class MetricsLog:
    """metrics.csv, one row per completed epoch; rewritten (not appended) so it stays valid CSV."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with open(path, newline="") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]

    def keep_until(self, epoch: int) -> None:
        """Forget rows after `epoch` (they came from a run continued past the resumed checkpoint)."""
        self.rows = [r for r in self.rows if int(r["epoch"]) <= epoch]
        self._write()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append({k: row.get(k, "") for k in METRIC_COLUMNS})
        self._write()

    def _write(self) -> None:
        write_csv_rows(self.path, METRIC_COLUMNS, self.rows)


def write_csv_rows(path: Path, columns, rows: list[dict[str, Any]]) -> None:
    """Rewrite a CSV of dict rows atomically (temp file + rename): a reader never sees half a file."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def setup_logging(run_dir: Path | None, is_main: bool) -> logging.Logger:
    """Console (stderr) and train.log on rank 0; other ranks log warnings only."""
    logger = logging.getLogger(LOGGER_NAME)
    close_logging(logger)
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if run_dir is not None and is_main:
        fh = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(fh)
    return logger


def close_logging(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)
