"""`evaluate_run`: score a trained run on a split or another dataset and write the report.

The data is streamed through a DataLoader; only the (N, K) logits and TTA probabilities are
kept, and the few most confident mistakes are re-read from disk at the end for the picture, so
memory does not grow with the number of images beyond a few floats per image.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from emorec.errors import EmorecError
from emorec.evaluation import plots
from emorec.evaluation.metrics import compute_metrics, reliability_bins, softmax
from emorec.evaluation.report import findings, write_report

MISTAKES_SHOWN = 12
THUMBNAIL_SIDE = 192


@dataclass
class EvalResult:
    output_dir: Path
    metrics: dict
    metrics_tta: dict | None
    report_path: Path
    metrics_path: Path
    pictures: dict[str, Path] = field(default_factory=dict)


def _select_samples(run_dir: Path, split: str, data: str | None, label_names: list[str]):
    """(samples, output name, description) for a run split or an external dataset."""
    from emorec.data.manifest import CSV_NAMES, read_manifest

    if data is None:
        split = split or "test"
        manifest_path = run_dir / "manifest.csv"
        if not manifest_path.is_file():
            raise EmorecError(f"{manifest_path} not found; evaluate a run directory written by `emorec train`, or pass --data SOURCE")
        manifest = read_manifest(str(manifest_path))
        if split not in manifest.splits():
            raise EmorecError(f"split '{split}' is not in {manifest_path} (it has: {', '.join(sorted(map(str, manifest.splits())))}); pass --split with one of those")
        return manifest.subset(split).samples, split, f"split '{split}' of the run's manifest.csv"
    manifest = read_manifest(str(data))
    if split is not None:
        if split not in manifest.splits():
            raise EmorecError(f"split '{split}' is not in {data} (it has: {', '.join(sorted(map(str, manifest.splits())))}); "
                              "drop --split to evaluate all of it, or pass one of those")
        manifest = manifest.subset(split)
    known = set(label_names)
    unknown = sorted({s.label for s in manifest.samples} - known)
    if unknown:
        raise EmorecError(
            f"labels {', '.join(unknown)} in {data} are not known to the model (it knows: {', '.join(label_names)}); "
            "rename them to the model's labels or drop those images"
        )
    source = Path(str(data)).resolve()
    # A generic CSV name (labels.csv, manifest.csv) says less than the dataset folder it sits in.
    name = (source.parent.name if source.name in CSV_NAMES else source.stem) if source.is_file() else source.name
    if split is not None:
        return manifest.samples, f"{name}-{split}", f"split '{split}' of {data} ({len(manifest.samples)} images)"
    return manifest.samples, name, f"all {len(manifest.samples)} images of {data}"


def _split_sizes(run_dir: Path) -> dict[str, int]:
    path = run_dir / "manifest.csv"
    if not path.is_file():
        return {}
    counts: dict[str, int] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            key = row.get("split") or "unsplit"
            counts[key] = counts.get(key, 0) + 1
    return counts


# summary.json keys worth a line in the report, in this order (the trainer writes more).
TRAINING_KEYS = ("train_images", "val_images", "epochs_completed", "best_epoch", "monitor", "best_metric",
                 "stopped_early", "wall_time_s", "device", "world_size", "amp")


def _training_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return {key: summary[key] for key in TRAINING_KEYS if key in summary}


def _metrics_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _mistakes(samples, indices, probs, targets, names, count: int) -> list[dict]:
    """Most confident wrong predictions, with thumbnails read back from disk."""
    from emorec.data.imageio import load_rgb

    preds = probs.argmax(1)
    confidence = probs.max(1)
    wrong = np.flatnonzero(preds != targets)
    chosen = wrong[np.argsort(-confidence[wrong])][:count]
    items = []
    for row in chosen:
        try:
            image = load_rgb(samples[indices[row]].path, min_size=THUMBNAIL_SIDE)
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        except EmorecError:
            image = None
        items.append({"image": image, "true": names[targets[row]], "predicted": names[preds[row]], "confidence": float(confidence[row]),
                      "path": samples[indices[row]].path})
    return items


def evaluate_run(
    run_dir: str | Path,
    split: str | None = None,
    data: str | None = None,
    tta: bool | str | None = None,
    output: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    faces: str | None = None,
) -> EvalResult:
    """Evaluate the best checkpoint of `run_dir` (a run, checkpoint or built-in model's name); write
    metrics.json, report.md and PNGs.

    Images: `split` of the run's manifest.csv (default "test"), or with `data` all of that dataset,
    or only its `split` when one is given (a CSV with a split column, e.g. FER-2013's val).

    `tta=None` follows the run's `eval.tta` and `eval.tta_mode`, True turns TTA on in the run's
    mode, a mode name ("views", "ten-crop") picks one; with TTA on, results with and without it are
    both reported. Output goes to `output` or RUN_DIR/eval/<split or dataset name>/. With `faces` (a
    detector name, e.g. "mtcnn") each photo is classified by its largest face's crop; photos
    without a face are counted as skipped.
    """
    from torch.utils.data import DataLoader

    from emorec.data.dataset import ManifestDataset, collate_indexed
    from emorec.data.preprocess import Preprocessing
    from emorec.devices import resolve_device
    from emorec.data.transforms import ten_crop_input_transform
    from emorec.data.views import TEN_CROP
    from emorec.evaluation.tta import logits_and_tta_probabilities, num_views, resolve_tta
    from emorec.inference import run_batches
    from emorec.models.classifier import parameter_summary
    from emorec.run_model import load_run_model

    from emorec.zoo.registry import builtin_of, resolve_model

    run_dir = resolve_model(run_dir)
    device = resolve_device(device)
    loaded = load_run_model(run_dir, device)
    cfg, names = loaded.cfg, list(loaded.label_map.names)
    mode = resolve_tta(tta, cfg.eval)
    use_tta = mode is not None
    samples, name, description = _select_samples(run_dir, split, data, names)
    if not samples:
        raise EmorecError(f"no images to evaluate in {description}; check the split or --data source")
    builtin = builtin_of(run_dir)
    # The installed package may be read-only: a built-in model's reports go where runs go.
    home = Path("runs") / builtin.name if builtin else run_dir
    output_dir = Path(output) if output else home / "eval" / name

    preprocessing = Preprocessing.from_transform(loaded.transform, loaded.mean, loaded.std)
    decode_size, crop_size = max(preprocessing.resize), preprocessing.input_size
    # Ten-crop cuts its views from the whole resized image, so the loader stops before the crop.
    transform = ten_crop_input_transform(loaded.transform) if mode == TEN_CROP else loaded.transform
    if faces:
        from emorec.faces.dataset import FaceCropDataset

        dataset = FaceCropDataset(samples, loaded.label_map, transform, faces)
        description += f", largest face of each photo ({faces} detector; photos without a face are skipped)"
    else:
        dataset = ManifestDataset(samples, loaded.label_map, transform, min_size=decode_size, return_index=True)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    loader = DataLoader(
        dataset, batch_size=batch_size or cfg.eval.batch_size, shuffle=False, num_workers=workers,
        collate_fn=collate_indexed, pin_memory=device.type == "cuda",
    )
    model = loaded.model

    def forward(images):
        if use_tta:
            return logits_and_tta_probabilities(model, images, cfg.eval, mode, crop_size)
        return model(images).float(), None

    all_logits, all_tta, all_targets, all_indices = [], [], [], []
    for (logits, tta_probs), (targets, indices, _) in run_batches(forward, loader, device, show_progress=True,
                                                                   desc=f"evaluate {name}"):
        all_logits.append(logits.cpu().numpy())
        if use_tta:
            all_tta.append(tta_probs.cpu().numpy())
        all_targets.append(targets.numpy())
        all_indices.append(indices.numpy())
    if not all_logits:
        raise EmorecError(f"none of the {len(samples)} images in {description} could be read; check the files")
    logits = np.concatenate(all_logits).astype(np.float64)
    targets = np.concatenate(all_targets)
    indices = np.concatenate(all_indices)
    skipped = len(samples) - len(targets)
    probs = softmax(logits)
    tta_probs = np.concatenate(all_tta).astype(np.float64) if use_tta else None

    metrics = compute_metrics(probs, targets, names)
    metrics_tta = compute_metrics(tta_probs, targets, names) if use_tta else None

    output_dir.mkdir(parents=True, exist_ok=True)
    pictures = {
        "confusion_matrix": plots.plot_confusion_matrix(np.array(metrics["confusion_matrix"]), names, output_dir / "confusion_matrix.png"),
    }
    if metrics_tta:
        pictures["confusion_matrix_tta"] = plots.plot_confusion_matrix(
            np.array(metrics_tta["confusion_matrix"]), names, output_dir / "confusion_matrix_tta.png", title="TTA"
        )
    pictures["per_class_f1"] = plots.plot_per_class_f1(metrics["per_class"], output_dir / "per_class_f1.png", compare=metrics_tta and metrics_tta["per_class"])
    pictures["reliability"] = plots.plot_reliability_diagram(reliability_bins(probs, targets), output_dir / "reliability.png", ece=metrics["ece"])
    mistakes = _mistakes(samples, indices, probs, targets, names, MISTAKES_SHOWN)
    pictures["mistakes"] = plots.plot_mistakes(mistakes, output_dir / "mistakes.png")
    from emorec.explain.mistakes import plot_explained_mistakes

    pictures["mistakes_explained"] = plot_explained_mistakes(model, loaded.transform, mistakes, names, output_dir / "mistakes_explained.png",
                                                             dataset.crop_photo if faces else None)
    rows = _metrics_rows(run_dir)
    if rows:
        pictures["training_curves"] = plots.plot_training_curves(rows, output_dir / "training_curves.png")
        pictures["lr_schedule"] = plots.plot_lr_schedule(rows, output_dir / "lr_schedule.png")

    _write_predictions(output_dir / "predictions.csv", samples, indices, targets, probs, tta_probs, names)

    params = parameter_summary(model)
    results = {
        "name": f"{run_dir.name} on {name}",
        "run_dir": str(run_dir),
        "checkpoint": str(loaded.checkpoint_path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "description": description,
            "num_images": int(len(targets)),
            "skipped": int(skipped),
            "class_counts": {n: int(c) for n, c in zip(names, np.bincount(targets, minlength=len(names)))},
            "split_sizes": _split_sizes(run_dir),
        },
        "model": {
            "backbone": cfg.model.backbone,
            "image_size": cfg.data.image_size,
            "attention": cfg.model.attention,
            "hidden_dims": str(cfg.model.hidden_dims),
            "parameters": params.get("total"),
            "trainable_parameters": params.get("trainable"),
            "size_mb": params.get("size_mb"),
            "checkpoint_epoch": loaded.epoch,
        },
        "training": _training_summary(run_dir),
        "tta": {"enabled": bool(use_tta), "mode": mode or cfg.eval.tta_mode, "hflip": cfg.eval.tta_hflip,
                "crops": cfg.eval.tta_crops, "views": num_views(cfg.eval, mode)},
        "metrics": metrics,
        "metrics_tta": metrics_tta,
        "findings": findings(metrics, metrics_tta),
        "mistakes": [{k: v for k, v in m.items() if k != "image"} for m in mistakes],
        "pictures": {key: path.name for key, path in pictures.items()},
    }
    metrics_path, report_path = write_report(results, output_dir)
    return EvalResult(output_dir, metrics, metrics_tta, report_path, metrics_path, pictures)


def _write_predictions(path: Path, samples, indices, targets, probs, tta_probs, names) -> None:
    """Per-image predictions (path, true, predicted, confidence[, TTA]) for later digging."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["path", "true", "predicted", "confidence"] + (["predicted_tta", "confidence_tta"] if tta_probs is not None else [])
        writer.writerow(header)
        for row, index in enumerate(indices):
            p = probs[row]
            line = [samples[index].path, names[targets[row]], names[int(p.argmax())], f"{p.max():.5f}"]
            if tta_probs is not None:
                q = tta_probs[row]
                line += [names[int(q.argmax())], f"{q.max():.5f}"]
            writer.writerow(line)
