"""Write an evaluation as `metrics.json` (machine-readable) and `report.md` (for people).

Both are rendered from one plain dict built by `evaluate_run`, so the numbers in the two files
are the same by construction. The Markdown links the PNGs that sit beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

SUMMARY_METRICS = (
    ("accuracy", "accuracy", True),
    ("macro_f1", "macro F1", True),
    ("weighted_f1", "weighted F1", True),
    ("top2_accuracy", "top-2 accuracy", True),
    ("ece", "expected calibration error", False),
)

PICTURE_TITLES = {
    "confusion_matrix": "Confusion matrix",
    "confusion_matrix_tta": "Confusion matrix with TTA",
    "per_class_f1": "F1 per class",
    "reliability": "Reliability diagram",
    "mistakes": "Most confident mistakes",
    "mistakes_explained": "Most confident mistakes with their Grad-CAM heat maps",
    "training_curves": "Training curves",
    "lr_schedule": "Learning-rate schedule",
}


def findings(metrics: dict, metrics_tta: dict | None = None, weakest: int = 2) -> list[str]:
    """Short plain-language observations: weakest classes, most confused pairs, TTA effect."""
    notes = []
    present = {n: v for n, v in metrics["per_class"].items() if v["support"] > 0}
    ranked = sorted(present.items(), key=lambda kv: kv[1]["f1"])[:weakest]
    if ranked and all(v["f1"] == ranked[0][1]["f1"] for v in present.values()):
        notes.append(f"All {len(present)} classes have the same F1 ({ranked[0][1]['f1']:.2f}).")
    elif ranked:
        notes.append(
            "Weakest classes: "
            + ", ".join(f"{name} (F1 {v['f1']:.2f}, recall {v['recall']:.2f}, {v['support']} images)" for name, v in ranked)
            + "."
        )
    pairs = metrics.get("most_confused") or []
    if pairs:
        notes.append(
            "Most confused: "
            + "; ".join(f"{p['true']} taken for {p['predicted']} {p['count']} times ({p['share']:.0%} of {p['true']})" for p in pairs)
            + "."
        )
    if metrics_tta is not None:
        delta = (metrics_tta["accuracy"] - metrics["accuracy"]) * 100
        delta_f1 = (metrics_tta["macro_f1"] - metrics["macro_f1"]) * 100
        notes.append(f"TTA changes accuracy by {delta:+.1f} points and macro F1 by {delta_f1:+.1f} points.")
    ece = metrics["ece"]
    if ece > 0.1:
        notes.append(f"Calibration is loose (ECE {ece:.3f}); treat probabilities as rankings, not frequencies.")
    return notes


def _fmt(value) -> str:
    """Metrics (0..1) with 4 decimals, larger numbers with thousands separators."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:.4f}"
        return f"{int(value):,}" if value.is_integer() else f"{value:,.1f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(results: dict) -> str:
    """The report as Markdown text (see `write_report`)."""
    m, t = results["metrics"], results.get("metrics_tta")
    lines = [f"# Evaluation: {results['name']}", ""]
    lines += [
        f"- run: `{results['run_dir']}`",
        f"- checkpoint: `{results['checkpoint']}`",
        f"- data: {results['data']['description']}",
        f"- written: {results['created']}",
        "",
        "## Data",
        "",
    ]
    data = results["data"]
    split_rows = [[k, v] for k, v in (data.get("split_sizes") or {}).items()]
    if split_rows:
        lines += ["Split sizes of the training run:", ""] + _table(["split", "images"], split_rows) + [""]
    lines += [f"Evaluated on {data['num_images']} images ({data['skipped']} unreadable and skipped).", ""]

    model = results["model"]
    lines += ["## Model", ""] + _table(["", ""], [[k, v] for k, v in model.items()]) + [""]
    training = results.get("training") or {}
    if training:
        lines += ["## Training", ""] + _table(["", ""], [[k, v] for k, v in training.items()]) + [""]

    lines += ["## Results", ""]
    header = ["metric", "single view"] + ([f"TTA ({results['tta']['views']} views)"] if t else [])
    rows = []
    for key, title, _higher_better in SUMMARY_METRICS:
        row = [title, m[key]] + ([t[key]] if t else [])
        rows.append(row)
    lines += _table(header, rows)
    if t and results["tta"].get("mode") == "ten-crop":
        lines += ["", "TTA views: ten-crop (centre and four corner crops of the resized image, and their mirrors)."]
    elif t:
        crops = results["tta"]["crops"]
        lines += ["", "TTA views: original" + (", horizontal flip" if results["tta"]["hflip"] else "")
                  + (f", {crops} zoomed crop{'s' if crops > 1 else ''}" if crops else "") + "."]
    lines += ["", f"ECE uses {m['ece_bins']} equal-width confidence bins.", ""]

    lines += ["## Per class", ""]
    header = ["class", "precision", "recall", "F1", "support"] + (["F1 with TTA"] if t else [])
    rows = [
        [name, v["precision"], v["recall"], v["f1"], v["support"]] + ([t["per_class"][name]["f1"]] if t else [])
        for name, v in m["per_class"].items()
    ]
    lines += _table(header, rows) + [""]

    lines += ["## Findings", ""] + [f"- {note}" for note in results.get("findings", [])] + [""]

    pictures = results.get("pictures") or {}
    if pictures:
        lines += ["## Pictures", ""]
        for key, file in pictures.items():
            title = PICTURE_TITLES.get(key, key)
            lines += [f"### {title}", "", f"![{title}]({file})", ""]
    return "\n".join(lines)


def write_report(results: dict, output_dir: str | Path) -> tuple[Path, Path]:
    """Write `metrics.json` and `report.md` into `output_dir`; returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "metrics.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path = output_dir / "report.md"
    md_path.write_text(render_markdown(results))
    return json_path, md_path
