"""Face recipe candidates on FER-2013's official val (PublicTest), at an equal number of steps.

Each candidate is configs/faces.yaml with a few values changed, trained from the same seed for the
same short OneCycle (or plateau) run: `--epochs` epochs of `--batches` batches of 64, i.e. 19,200
training images by default (two thirds of one pass over FER-2013's 28,709). Validation is the
trainer's own, one centre view per image (no TTA), on all 3,589 PublicTest images. The winner
by val accuracy goes into configs/faces.yaml and trains for the full hour (RESULTS.md, "Faces").

A short run favours what converges fast; the table says so and gives the time each took, so a
candidate that wins only per step (96 px) is weighed by its cost as well.

    python benchmarks/bench_face_recipe.py                       # every candidate, ~25-35 min idle
    python benchmarks/bench_face_recipe.py --only base64,sgd     # a subset
    python benchmarks/bench_face_recipe.py --quick               # the code path: 2 candidates, 3 batches
Finished candidates are kept in results/face_recipe.partial.json and not re-run, so an
interrupted comparison continues where it stopped. Last line:
`face_recipe: emorec X vs reference Y val accuracy ratio=R` (the winner vs the issue's probe
recipe, pretrained tf_efficientnet_lite0 at 48 px).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "face_recipe"
FACES_YAML = C.REPO / "configs" / "faces.yaml"
# Each entry: what it tests, and the values it changes in configs/faces.yaml; every one sets
# the input size, so the comparison does not depend on the size faces.yaml ships with.
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "probe48": ("the issue's probe: pretrained lite0, 48 px (native size)", ["data.image_size=48"]),
    "base64": ("the same at 64 px (faces upsampled)", ["data.image_size=64"]),
    "size96": ("the same at 96 px", ["data.image_size=96"]),
    "size80": ("the same at 80 px", ["data.image_size=80"]),
    "size112": ("the same at 112 px", ["data.image_size=112"]),
    # 96 px costs ~1.5x the time of 64 px per step: 64 px given that time (225 batches per epoch)
    "base64_time_of_96": ("64 px with 1.5x the batches (the time 96 px takes)",
                          ["data.image_size=64", "train.limit_train_batches=225"]),
    "sgd_plateau": ("SGD + Nesterov 0.9, lr 0.01, reduce-on-plateau (Khaireddin & Chen), 64 px",
                    ["data.image_size=64", "optim.name=sgd", "optim.schedule=plateau", "optim.lr=0.01",
                     "optim.weight_decay=0.0001", "optim.plateau_patience=1", "optim.plateau_factor=0.5"]),
    "focal": ("focal loss (gamma 2, alpha 0.25), no label smoothing, 64 px",
              ["data.image_size=64", "loss.name=focal", "loss.label_smoothing=0"]),
    "strong_aug": ("stronger augmentation: rotation 10, jitter 0.2, random erasing 0.25, 64 px",
                   ["data.image_size=64", "augment.rotation=10", "augment.color_jitter=0.2",
                    "augment.random_erasing=0.25"]),
    "ema": ("EMA of the weights (decay 0.998), 64 px", ["data.image_size=64", "train.ema=true", "train.ema_decay=0.998"]),
    "scratch_resnet10t": ("compact network from scratch: timm resnet10t (4.9M parameters), 64 px",
                          ["data.image_size=64", "model.backbone=resnet10t", "model.pretrained=false",
                           "model.weights=null", "optim.max_lr=0.003"]),
}
REFERENCE = "probe48"


def run_candidate(key: str, overrides: list[str], data: Path, out_dir: Path, epochs: int, batches: int,
                  threads: int) -> dict:
    from emorec.api import train
    from emorec.config import load_config
    from emorec.training.run_state import run_finished

    run_dir = out_dir / key
    base = [f"data.source={data}", f"train.output_dir={out_dir}", f"train.name={key}", f"train.epochs={epochs}",
            f"train.limit_train_batches={batches}", "train.patience=0", "data.num_workers=0"]
    cfg = load_config(FACES_YAML, base + overrides)
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    with C.trainer_output_to(out_dir / f"{key}.log"):
        result = train(cfg, resume=run_dir if run_dir.exists() and not run_finished(run_dir) else None)
    seconds = time.perf_counter() - start
    final = result.final
    return {
        "overrides": overrides,
        "best_val_accuracy": max(h["val_accuracy"] for h in result.history),
        "final_val_accuracy": final["val_accuracy"],
        "final_val_macro_f1": final["val_macro_f1"],
        "epochs": result.epochs_completed,
        "train_images": epochs * cfg.train.limit_train_batches * cfg.data.batch_size,
        "seconds": round(seconds, 1),
        "history": result.history,
    }


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(CANDIDATES)}")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batches", type=int, default=150, help="batches of 64 per epoch")
    p.add_argument("--runs", type=Path, default=C.REPO / "runs" / "face_recipe", help="run directories")
    return p


def main() -> int:
    p = build_parser()
    args = p.parse_args()
    fer = C.shared_dataset("fer2013")
    if fer is None:
        C.finish(NAME, args, None, None, "val accuracy", {}, notes=["../shared/datasets/fer2013 is absent"])
        return 0
    keys = args.only.split(",") if args.only else list(CANDIDATES)
    if args.quick:  # the code path, not a measurement: two candidates, 1 epoch of 3 batches
        keys, args.epochs, args.batches = keys[:2], 1, 3
        args.runs = args.runs.with_name(args.runs.name + "_quick")
        shutil.rmtree(args.runs, ignore_errors=True)
        (args.results / f"{NAME}_quick.partial.json").unlink(missing_ok=True)
    for key in keys:
        if key not in CANDIDATES:
            p.error(f"--only: unknown candidate '{key}'; choose from {', '.join(CANDIDATES)}")
    args.runs.mkdir(parents=True, exist_ok=True)
    partial = args.results / f"{NAME}{'_quick' if args.quick else ''}.partial.json"
    done = json.loads(partial.read_text()) if partial.exists() else {}
    settings = {"epochs": args.epochs, "batches": args.batches}
    if done.get("settings", settings) != settings:
        p.error(f"{partial} holds candidates run with {done['settings']}; delete it or pass those values")
    results = done.get("candidates", {})
    for key in keys:
        if key in results:
            C.log(f"{key}: done earlier, val accuracy {results[key]['best_val_accuracy']:.4f}")
            continue
        what, overrides = CANDIDATES[key]
        C.log(f"{key}: {what}")
        results[key] = {"what": what, **run_candidate(key, overrides, fer, args.runs, args.epochs, args.batches,
                                                      args.threads or 2)}
        C.log(f"{key}: val accuracy {results[key]['best_val_accuracy']:.4f} in {results[key]['seconds']:.0f} s")
        args.results.mkdir(parents=True, exist_ok=True)
        tmp = partial.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": settings, "candidates": results}, indent=2, default=str))
        tmp.replace(partial)
    rows = [[k, r["best_val_accuracy"], r["final_val_macro_f1"], r["seconds"], r["what"]]
            for k, r in sorted(results.items(), key=lambda kv: -kv[1]["best_val_accuracy"])]
    print(C.table(rows, ["candidate", "val acc", "val macro-F1", "seconds", "what"]))
    winner = rows[0][0]
    reference = results.get(REFERENCE, {}).get("best_val_accuracy")
    C.finish(NAME, args, results[winner]["best_val_accuracy"], reference, "val accuracy",
             {"winner": winner, **settings, "candidates": results},
             notes=[f"winner: {winner} ({results[winner]['what']})"], r=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
