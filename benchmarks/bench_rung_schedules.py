"""Which learning-rate schedule ranks fine-tunes better at a rung of successive halving (issue 23).

`emorec fit` scores its full fine-tunes after a short first rung and trains on only the best. The
rung's score comes from a run whose final length is not known yet. Two ways to schedule it:
onecycle  OneCycle planned for the longest run (what fit does): the rung score is the val macro-F1
          after epoch R of an N-epoch OneCycle, taken at a high, mid-schedule rate;
wsd       warmup-stable-decay: the same warm-up (fixed in epochs), the peak held, and a rung's
          score taken after a decay of its own at the rung's end (a run of R epochs whose last 20%
          decays: what a decay branch off the long run's stable phase gives).
Every candidate (a full fine-tune from configs/high_accuracy.yaml at one input size and peak rate,
tf_efficientnet_lite0 from ../shared) trains three times on bench_fit.py's Emotion6 fold 0 (its
train and val; the test images are never read): onecycle for N epochs, wsd for N epochs, wsd for R
epochs. A candidate's final score is its best val macro-F1 over the N epochs. How well the rung
ranks: Kendall's tau between the rung scores and the finals (each schedule's own finals, and the
better final of the two), and the regret of keeping the rung's top third (the best final of all
minus the best final among those kept, in points).

    python benchmarks/bench_rung_schedules.py          # 6 candidates (96/128/160 px x 2 rates), N 5, R 1
    python benchmarks/bench_rung_schedules.py --sizes 96,128 --epochs 4
    python benchmarks/bench_rung_schedules.py --quick  # 2 candidates at 32 px, N 2, 150 images: a smoke run
Each run is kept under --work-dir and every finished one in NAME.partial.json beside the results, so
an interrupted benchmark goes on where it stopped (run the same command again).
Last line: `rung_schedules: emorec X vs reference Y kendall tau ratio=R`: X is wsd's rung-to-final
tau, Y onecycle's (each against its own finals); the rest is in results/rung_schedules.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common as C  # noqa: E402 (benchmarks/ is sys.path[0] for a script)

WEIGHTS = C.SHARED / "weights" / "tf_efficientnet_lite0" / "model.safetensors"
SCHEDULES = ("onecycle", "wsd", "wsd-rung")


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--sizes", default="96,128,160", help="input sizes of the candidates (px)")
    p.add_argument("--rates", default="0.0003,0.001", help="peak rates (optim.max_lr) of the candidates; optim.lr "
                                                             "keeps the recipe's ratio to it")
    p.add_argument("--epochs", type=int, default=5, help="N: the long run's epochs")
    p.add_argument("--rung", type=int, default=1, help="R: the rung's epochs")
    p.add_argument("--limit", type=int, default=0, help="a random subset of N images")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/emorec_bench_rung_schedules"))
    return p


def candidates(args) -> list[dict]:
    return [{"id": f"{size}px-lr{rate:g}", "size": size, "max_lr": rate}
            for size in (int(s) for s in args.sizes.split(",")) for rate in (float(r) for r in args.rates.split(","))]


def run_config(candidate: dict, schedule: str, splits_csv: Path, args):
    """The recipe with the candidate's size and rate, `schedule`'s settings and length."""
    from emorec.config import load_config
    from emorec.training.recipes import HIGH_ACCURACY_CONFIG

    recipe = load_config(HIGH_ACCURACY_CONFIG)
    epochs = args.rung if schedule == "wsd-rung" else args.epochs
    # One warm-up for every run of a candidate: OneCycle's over N epochs, which WSD's runs copy in epochs.
    warmup_epochs = recipe.optim.pct_start * args.epochs
    overrides = [f"data.source={splits_csv}", f"data.image_size={candidate['size']}", f"data.num_workers={args.workers}",
                 "model.backbone=tf_efficientnet_lite0", f"model.weights={WEIGHTS}", "model.pretrained=false",
                 "model.freeze_backbone_epochs=0", "train.patience=0", f"train.epochs={epochs}",
                 f"optim.max_lr={candidate['max_lr']}", f"optim.lr={candidate['max_lr'] * recipe.optim.lr / recipe.optim.max_lr}",
                 f"optim.schedule={'onecycle' if schedule == 'onecycle' else 'wsd'}",
                 f"optim.warmup_epochs={warmup_epochs}", f"train.output_dir={args.work_dir / 'runs'}",
                 f"train.name={candidate['id']}-{schedule}", "train.device=cpu"]
    return load_config(HIGH_ACCURACY_CONFIG, overrides)


def train_one(cfg) -> list[float]:
    """Val macro-F1 after each epoch; a run interrupted before continues from its last checkpoint."""
    import shutil

    from emorec.training.trainer import train

    run_dir = Path(cfg.train.output_dir) / cfg.train.name
    resume = run_dir if (run_dir / "checkpoints" / "last.pt").is_file() else None
    if resume is None and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with C.trainer_output_to(run_dir.parent / f"{cfg.train.name}.log"):
        result = train(cfg, resume)
    return [float(r["val_macro_f1"]) for r in sorted(result.history, key=lambda r: int(r["epoch"]))]


def ranking(rung: dict[str, float], final: dict[str, float]) -> dict:
    """Kendall's tau of the rung scores against the finals, and the regret of keeping the rung's top third."""
    from scipy.stats import kendalltau

    ids = sorted(rung)
    tau = kendalltau([rung[i] for i in ids], [final[i] for i in ids]).statistic if len(ids) > 1 else float("nan")
    kept = sorted(ids, key=lambda i: -rung[i])[:max(1, len(ids) // 3)]
    return {"kendall_tau": round(float(tau), 3), "kept": kept,
            "regret_points": round(100 * (max(final.values()) - max(final[i] for i in kept)), 2)}


def summary(runs: dict, args) -> dict:
    ids = sorted({key.rsplit("/", 1)[0] for key in runs})
    ids = [i for i in ids if all(f"{i}/{s}" in runs for s in SCHEDULES)]
    if not ids:
        return {}
    finals = {s: {i: max(runs[f"{i}/{s}"]) for i in ids} for s in ("onecycle", "wsd")}
    better = {i: max(finals["onecycle"][i], finals["wsd"][i]) for i in ids}
    rungs = {"onecycle": {i: runs[f"{i}/onecycle"][args.rung - 1] for i in ids},
             "wsd": {i: runs[f"{i}/wsd-rung"][-1] for i in ids}}
    return {"candidates": ids, "rung_scores": rungs, "finals": finals,
            "own_finals": {s: ranking(rungs[s], finals[s]) for s in rungs},
            "better_finals": {s: ranking(rungs[s], better) for s in rungs},
            "mean_final": {s: round(sum(finals[s].values()) / len(ids), 4) for s in finals}}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.sizes, args.rates, args.epochs, args.rung, args.limit = "32", "0.0003,0.001", 2, 1, args.limit or 150
        args.work_dir = args.work_dir.with_name(args.work_dir.name + "_quick")
    if not WEIGHTS.is_file() or not (C.SHARED / "datasets" / "emotion6").is_dir():
        print("rung_schedules: skipped, needs ../shared (Emotion6 and the lite0 weights)")
        return 0
    if not 1 <= args.rung < args.epochs:
        raise SystemExit(f"rung_schedules: --rung {args.rung} must be at least 1 and under --epochs {args.epochs}")
    C.apply_threads(args)
    from bench_fit import emotion6_folds

    fold_args = argparse.Namespace(folds=5, limit=args.limit)
    _, splits_csv = next(iter(emotion6_folds(fold_args, args.work_dir)))
    partial = Path(args.results) / "rung_schedules.partial.json"
    # Runs are keyed by candidate (size and rate), so adding sizes or rates later keeps the runs done.
    settings = {k: getattr(args, k) for k in ("epochs", "rung", "limit")}
    saved = json.loads(partial.read_text()) if partial.is_file() else {}
    same = all(saved.get("settings", {}).get(k) == v for k, v in settings.items())
    runs = saved.get("runs", {}) if same else {}
    wanted = candidates(args)
    for candidate in wanted:
        for schedule in SCHEDULES:
            key = f"{candidate['id']}/{schedule}"
            if key in runs:
                continue
            C.log(f"{key}: training")
            runs[key] = train_one(run_config(candidate, schedule, splits_csv, args))
            C.log(f"{key}: val macro-F1 per epoch {[round(100 * v, 1) for v in runs[key]]}")
            partial.parent.mkdir(parents=True, exist_ok=True)
            tmp = partial.with_suffix(".tmp")
            tmp.write_text(json.dumps({"settings": settings, "runs": runs}, indent=1))
            tmp.replace(partial)
    ids = {c["id"] for c in wanted}
    result = summary({k: v for k, v in runs.items() if k.rsplit("/", 1)[0] in ids}, args)
    own = result["own_finals"]
    notes = [f"{s}: rung tau {own[s]['kendall_tau']} against its own finals, regret of the top third "
             f"{own[s]['regret_points']} points; tau {result['better_finals'][s]['kendall_tau']} against the better "
             f"final of the two; mean final {100 * result['mean_final'][s]:.1f}" for s in own]
    C.finish("rung_schedules", args, own["wsd"]["kendall_tau"], own["onecycle"]["kendall_tau"], "kendall tau",
             {"settings": {**settings, "sizes": args.sizes, "rates": args.rates}, "runs": runs, **result}, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
