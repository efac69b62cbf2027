"""`emorec models build NAME`: re-create a built-in model from `../shared` with its card's commands.

Three steps, each resumable: run the recipe's emorec commands (a finished train run is kept, an
interrupted one resumed; `fit` resumes from its own study), store the chosen checkpoint as
float16 in the package (`store`), then measure it and write card.json and MODEL_CARD.md
(`write_card`). The commands run as `python -m emorec` subprocesses: exactly what the card tells
a reader to type, and no import of the CLI from the library.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emorec.errors import EmorecError
from emorec.zoo.card import render_card
from emorec.zoo.recipes import Recipe, recipe_of
from emorec.zoo.registry import CARD_JSON, CARD_MD, CHECKPOINT, builtin_model, file_sha256
from emorec.zoo.scoring import SPLITS_FILE, measure_speed, score, scoring_samples, summarize

# Training state a shipped model does not need (optimizer moments alone are twice the weights).
DROPPED_KEYS = ("optimizer", "scheduler", "scaler", "rng", "rng_state", "ema", "early_stopping", "sampler")


def fill(text: str, shared: Path, work: Path) -> str:
    return text.format(shared=shared, work=work)


def run_commands(recipe: Recipe, shared: Path, work: Path) -> float:
    """Run (or resume) the recipe's commands; seconds spent."""
    started = time.time()
    for argv in recipe.commands:
        argv = [fill(a, shared, work) for a in argv]
        run_dir = Path(fill(recipe.run, shared, work))
        if argv[0] == "train" and (run_dir / "summary.json").is_file():
            print(f"{run_dir} has finished training; kept", file=sys.stderr)
            continue
        if argv[0] == "train" and (run_dir / "checkpoints").is_dir():
            argv = ["train", "--resume", str(run_dir)]
        print("emorec " + " ".join(argv), file=sys.stderr)
        if subprocess.run([sys.executable, "-m", "emorec", *argv]).returncode != 0:
            raise EmorecError(f"`emorec {' '.join(argv)}` failed; fix the cause above and run `emorec models build "
                              f"{recipe.name}` again (it resumes)")
    return time.time() - started


def store(run_dir: Path, folder: Path, recipe: Recipe, shared: Path) -> None:
    """folder/checkpoints/best.pt = the run's chosen checkpoint, float16, without training state;
    with `recipe.ship_splits`, folder/splits.csv = its manifest with dataset-relative paths."""
    from emorec.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run_dir, map_location="cpu")
    slim = {k: v for k, v in ckpt.items() if k not in DROPPED_KEYS and k != "loaded_from"}
    slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    slim["stored_as"] = "float16"
    save_checkpoint(folder / CHECKPOINT, slim)
    if recipe.ship_splits:
        root = Path(fill(recipe.dataset_root, shared, Path("."))).resolve()
        with open(run_dir / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(folder / SPLITS_FILE, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["path", "label", "split"])
            for row in rows:
                writer.writerow([Path(row["path"]).resolve().relative_to(root).as_posix(), row["label"], row["split"]])


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def measure(folder: Path, recipe: Recipe, shared: Path) -> dict[str, Any]:
    """The card's figures for the stored weights: the checked scoring (with TTA when the recipe
    has one), the extra scorings, speed."""
    entries = []
    for scoring in (recipe.check, *recipe.extra):
        samples = scoring_samples(scoring, shared, folder, recipe.dataset_root)
        entry = {"description": scoring.description, "short": scoring.description.split(" (")[0],
                 "data": scoring.data, "split": scoring.split, **summarize(score(folder, samples))}
        if recipe.tta:
            entry["tta"] = {"mode": recipe.tta, **summarize(score(folder, samples, recipe.tta))}
        entries.append(entry)
    return {"check": entries[0], "extra": entries[1:], "speed": measure_speed(folder, recipe.speed_image_side)}


def write_card(name: str, run_dir: Path, shared: Path, commands: list[list[str]], train_seconds: float) -> Path:
    """card.json and MODEL_CARD.md for the stored model, from measurements."""
    import emorec
    from emorec.models.classifier import parameter_summary
    from emorec.run_model import load_run_model

    recipe, model = recipe_of(name), builtin_model(name)
    folder = model.folder
    loaded = load_run_model(folder / CHECKPOINT)
    cfg = loaded.cfg
    figures = measure(folder, recipe, shared)
    card = {
        "name": name,
        "title": recipe.title,
        "labels": list(loaded.label_map.names),
        "model": {"backbone": cfg.model.backbone, "image_size": cfg.data.image_size,
                  "parameters": int(parameter_summary(loaded.model)["total"]),
                  "description": _describe(cfg, run_dir)},
        "checkpoint": {"path": CHECKPOINT.as_posix(), "bytes": model.checkpoint.stat().st_size,
                       "sha256": file_sha256(model.checkpoint), "dtype": "float16, loaded as float32"},
        "build": {"commands": commands, "commit": _git_commit(), "emorec": emorec.__version__,
                  "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": _machine(),
                  "train_seconds": round(train_seconds), "source_epoch": loaded.epoch},
        **figures,
    }
    summary = _read_json(run_dir / "summary.json")
    if summary.get("cv_macro_f1") is not None:
        card["selection"] = {"cv_macro_f1": summary["cv_macro_f1"], "folds": summary.get("folds"),
                             "refit": summary.get("refit")}
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (folder / CARD_MD).write_text(render_card(card, recipe))
    return folder / CARD_MD


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _describe(cfg, run_dir: Path) -> str:
    what = f"timm {cfg.model.backbone}"
    chosen = _read_json(run_dir.parent / "fit.json").get("best_dir_of")
    if chosen:
        what += f", `emorec fit`'s chosen candidate `{chosen}`"
    head = "linear head" if not cfg.model.hidden_dims else f"head with hidden layers {list(cfg.model.hidden_dims)}"
    return f"{what}, {head}"


def _train_seconds(run_dir: Path, fallback: float) -> float:
    # A search's best/ is one of its candidates: the time is the whole search's.
    for path, key in ((run_dir.parent / "fit.json", "spent_s"), (run_dir / "summary.json", "wall_time_s")):
        if value := _read_json(path).get(key):
            return float(value)
    return fallback


def build_builtin(name: str, shared: str | Path, work: str | Path, train: bool = True) -> Path:
    """Re-create built-in model `name` (its commands, unless `train` is False and the run exists),
    store it in the package and write its card; the path of MODEL_CARD.md."""
    recipe = recipe_of(name)
    shared, work = Path(shared), Path(work)
    if not (shared / "datasets").is_dir():
        raise EmorecError(f"{shared} has no datasets/ folder; pass --shared with the folder that holds datasets/ and weights/")
    for argv in recipe.commands:
        if "--config" in argv and not Path(argv[argv.index("--config") + 1]).is_file():
            raise EmorecError(f"{argv[argv.index('--config') + 1]} not found; run `emorec models build` from the "
                              "repository root")
    spent = run_commands(recipe, shared, work) if train else 0.0
    run_dir = Path(fill(recipe.run, shared, work))
    if not run_dir.is_dir():
        raise EmorecError(f"{run_dir} does not exist; run `emorec models build {name}` without --no-train")
    folder = builtin_model(name).folder
    tmp = folder.with_name(f".{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    store(run_dir, tmp, recipe, shared)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    commands = [[fill(a, Path("../shared"), Path("runs/builtin")) for a in argv] for argv in recipe.commands]
    return write_card(name, run_dir, shared, commands, _train_seconds(run_dir, spent))
