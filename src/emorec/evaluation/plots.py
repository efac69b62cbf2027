"""Evaluation pictures as PNG files: confusion matrix, training curves, learning-rate schedule,
reliability diagram, per-class F1 and a grid of the most confident mistakes.

Figures are drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure` rather than
pyplot: no global figure state, no GUI backend, safe in worker threads and in notebooks (which
show the written PNGs). Each function takes plain data and an output path and returns the path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emorec.evaluation.metrics import ReliabilityBins

DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _label_size(num_classes: int) -> int:
    return 10 if num_classes <= 10 else 8 if num_classes <= 20 else 6


def plot_confusion_matrix(cm: np.ndarray, names: list[str], path: str | Path, title: str = "") -> Path:
    """Two panels: raw counts, and row percentages (recall per true class)."""
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    pct = np.divide(cm * 100.0, rows, out=np.zeros(cm.shape), where=rows > 0)
    k = len(names)
    side = max(4.5, 0.55 * k + 2.5)
    fig = _new_figure(2 * side, side)
    fontsize = _label_size(k)
    for ax, values, fmt, subtitle in (
        (fig.add_subplot(1, 2, 1), cm, "{:d}", "counts"),
        (fig.add_subplot(1, 2, 2), pct, "{:.0f}", "% of true class"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=fontsize)
        ax.set_yticks(range(k), names, fontsize=fontsize)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} {subtitle}".strip())
        threshold = values.max() / 2 if values.size and values.max() > 0 else 1
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    value = values[i, j]
                    ax.text(
                        j, i, fmt.format(int(value) if fmt == "{:d}" else value), ha="center", va="center",
                        fontsize=fontsize, color="white" if value > threshold else "black",
                    )
    return _save(fig, path)


def _column(rows: list[dict], key: str) -> np.ndarray:
    values = []
    for row in rows:
        raw = row.get(key, "")
        try:
            values.append(float(raw))
        except (TypeError, ValueError):
            values.append(np.nan)
    return np.array(values)


def plot_training_curves(rows: list[dict], path: str | Path) -> Path:
    """Loss, accuracy and macro-F1 per epoch for train and val, from metrics.csv rows.

    A series the log does not hold (the trainer records macro-F1 for val only) is left out.
    """
    epochs = _column(rows, "epoch")
    fig = _new_figure(13, 4)
    for index, (metric, title) in enumerate((("loss", "loss"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"))):
        ax = fig.add_subplot(1, 3, index + 1)
        for split, style, colour in (("train", "-o", "tab:blue"), ("val", "-s", "tab:orange")):
            values = _column(rows, f"{split}_{metric}")
            if np.isfinite(values).any():
                ax.plot(epochs, values, style, color=colour, markersize=3, label=split)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)


def plot_lr_schedule(rows: list[dict], path: str | Path) -> Path:
    """Learning rate per epoch as logged in metrics.csv (log scale: OneCycle spans decades)."""
    epochs = _column(rows, "epoch")
    lr = _column(rows, "lr")
    fig = _new_figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, lr, "-o", markersize=3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if np.all(lr[np.isfinite(lr)] > 0) and np.isfinite(lr).any():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedule")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_reliability_diagram(bins: ReliabilityBins, path: str | Path, ece: float | None = None) -> Path:
    """Accuracy against confidence per bin; the diagonal is perfect calibration."""
    fig = _new_figure(10, 4.5)
    ax = fig.add_subplot(1, 2, 1)
    width = np.diff(bins.edges)
    centres = bins.edges[:-1] + width / 2
    used = bins.counts > 0
    ax.bar(centres[used], bins.accuracy[used], width=width[used], edgecolor="black", alpha=0.8, label="accuracy")
    ax.hlines(
        bins.confidence[used], bins.edges[:-1][used], bins.edges[1:][used], colors="tab:red", linewidth=2,
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    hist = fig.add_subplot(1, 2, 2)
    hist.bar(centres, bins.counts, width=width, edgecolor="black")
    hist.set_xlim(0, 1)
    hist.set_xlabel("confidence")
    hist.set_ylabel("samples")
    hist.set_title("confidence histogram")
    return _save(fig, path)


def plot_per_class_f1(per_class: dict[str, dict], path: str | Path, compare: dict[str, dict] | None = None) -> Path:
    """Horizontal bars of F1 per class, weakest at the bottom; optional second series (TTA)."""
    names = sorted(per_class, key=lambda n: per_class[n]["f1"])
    f1 = [per_class[n]["f1"] for n in names]
    fig = _new_figure(7, max(3.5, 0.4 * len(names) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    height = 0.4 if compare else 0.7
    ax.barh(y - (height / 2 if compare else 0), f1, height=height, label="single view")
    if compare:
        ax.barh(y + height / 2, [compare[n]["f1"] for n in names], height=height, label="TTA")
        ax.legend(loc="lower right")
    for yi, value in zip(y, f1):
        ax.text(min(value + 0.01, 0.93), yi - (height / 2 if compare else 0), f"{value:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=_label_size(len(names)))
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title("F1 per class")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_mistakes(mistakes: list[dict], path: str | Path, columns: int = 4) -> Path:
    """Grid of images with 'true -> predicted (confidence)' captions.

    Each item holds `image` (PIL image or HxWx3 uint8 array, or None when it could not be read),
    `true`, `predicted`, `confidence`.
    """
    count = max(1, len(mistakes))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fig = _new_figure(2.6 * columns + 0.4, 2.9 * rows + 0.4)
    if not mistakes:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
        ax.axis("off")
    for index, item in enumerate(mistakes):
        ax = fig.add_subplot(rows, columns, index + 1)
        if item.get("image") is not None:
            ax.imshow(np.asarray(item["image"]))
        ax.set_title(f"true: {item['true']}\npred: {item['predicted']} ({item['confidence']:.0%})", fontsize=9)
        ax.axis("off")
    fig.suptitle("most confident mistakes")
    return _save(fig, path)
