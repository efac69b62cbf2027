"""`learning_curve.png`: validation accuracy and macro-F1 against the run's wall time.

Written by the trainer into the run directory after every epoch (one small figure, ~0.1 s), so
a run that is still going, or was stopped, shows when more time stopped paying. The x axis is
the cumulative wall time at the end of each epoch (`wall_time_s` in metrics.csv: training,
validation and checkpoints, across resumes); rows of older runs without it fall back to the sum
of their `epoch_seconds` (training only). Drawn on matplotlib's Agg canvas through `Figure`, like
evaluation/plots.py, which training may not import (tests/test_layers.py).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

FILENAME = "learning_curve.png"


def _number(row: dict, key: str) -> float:
    try:
        return float(row.get(key, ""))
    except (TypeError, ValueError):
        return math.nan


def wall_minutes(rows: list[dict]) -> list[float]:
    """Cumulative wall time in minutes at the end of each metrics.csv row."""
    logged = [_number(r, "wall_time_s") for r in rows]
    if rows and all(math.isfinite(v) for v in logged):
        return [v / 60 for v in logged]
    total, out = 0.0, []
    for r in rows:
        seconds = _number(r, "epoch_seconds")
        total += seconds if math.isfinite(seconds) else 0.0
        out.append(total / 60)
    return out


def plot_learning_curve(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Val accuracy and macro-F1 (left axis) and the learning rate (right, log) against wall-time
    minutes, from metrics.csv rows; the best accuracy is marked. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    minutes = wall_minutes(rows)
    fig = Figure(figsize=(7, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for key, label, style in (("val_accuracy", "val accuracy", "-o"), ("val_macro_f1", "val macro-F1", "-s")):
        ax.plot(minutes, [_number(r, key) for r in rows], style, markersize=3, label=label)
    accuracy = [_number(r, "val_accuracy") for r in rows]
    finite = [i for i, v in enumerate(accuracy) if math.isfinite(v)]
    best_text = ""
    if finite:
        best = max(finite, key=lambda i: accuracy[i])
        ax.plot([minutes[best]], [accuracy[best]], "*", color="black", markersize=10)
        best_text = (f": best val accuracy {accuracy[best]:.3f} (epoch {rows[best].get('epoch', best + 1)}, "
                     f"{minutes[best]:.1f} min)")
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("validation score")
    ax.grid(alpha=0.3)
    lr = [_number(r, "lr") for r in rows]
    if any(math.isfinite(v) and v > 0 for v in lr):
        right = ax.twinx()
        right.plot(minutes, lr, ":", color="grey", label="learning rate")
        right.set_yscale("log")
        right.set_ylabel("learning rate", color="grey")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title((title or "learning curve") + best_text, fontsize=10)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)  # a reader never sees half a PNG
    return path
