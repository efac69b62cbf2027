"""`emorec fit` against the project's own face recipe, given the same time, on FER-2013.

Issue 23's large-data target: on FER-2013, `emorec fit --budget B` must choose a model whose test
top-1 is within 1 point of `configs/faces.yaml` trained for the same B, scored the same way.

Data: FER-2013's official train and val (PublicTest), with the seed-0 duplicate-aware test carve of
bench_fit.py (about 10% of train, byte-identical copies kept on one side); neither arm sees a test
image before its choice is made.
emorec     `emorec fit CSV --budget B --backbone tf_efficientnet_lite0=<../shared weights>
           --image-size 112`, then the chosen model's test score from OUTPUT/fit.json.
reference  `emorec train --config configs/faces.yaml` on the same CSV with `train.time_limit_s=B`
           (and `train.epochs=--recipe-epochs`, planned to end near B), best epoch by val
           accuracy, then `emorec evaluate RUN --split test` (ten-crop TTA, as faces.yaml says).

The two arms run at the same time as two processes with `--threads-per-arm` threads each, so
whatever else loads the machine loads both alike; each arm gets the same cores for the same
wall-clock time. An arm that finished (its arm JSON in the work folder) is not run again, and the
fit arm resumes its OUTPUT when killed.

    python benchmarks/bench_fit_vs_recipe.py --budget 60m              # both arms, 1 thread each
    python benchmarks/bench_fit_vs_recipe.py --quick                   # 3 minutes on 600 images
    python benchmarks/bench_fit_vs_recipe.py --budget 60m --reference-from results/fit_vs_recipe.json
                                                # the fit arm only, against a recipe arm measured before
Last line: `fit_vs_recipe: emorec X vs reference Y % test top-1 ratio=R` (ten-crop / views TTA
where the model's config turns it on; one-view figures, the chosen candidate, the leaderboard and
where the budget went are in results/fit_vs_recipe.json).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, SHARED, finish, log, parser  # noqa: E402 (benchmarks/ is sys.path[0] for a script)

WEIGHTS = SHARED / "weights" / "tf_efficientnet_lite0" / "model.safetensors"


def build_parser():
    p = parser(__doc__)
    p.add_argument("--budget", default="60m", help="time of each arm (default 60m)")
    p.add_argument("--threads-per-arm", type=int, default=1)
    p.add_argument("--recipe-epochs", type=int, default=5,
                   help="faces.yaml's OneCycle length; with 1 thread an epoch of the carve's train is ~11 min here")
    p.add_argument("--image-size", type=int, default=112, help="fit's feature extraction size")
    p.add_argument("--limit", type=int, default=0, help="a random subset of N images")
    p.add_argument("--arm", choices=("both", "fit", "recipe"), default="both", help=argparse_hidden())
    p.add_argument("--work-dir", default="/tmp/emorec_bench_fit_vs_recipe")
    p.add_argument("--reference-from", metavar="JSON",
                   help="take the recipe arm from an earlier results JSON of this benchmark (same --budget and "
                        "data) instead of training it again; the notes say so")
    return p


def reuse_reference(args, work: Path) -> str:
    """The recipe arm of an earlier run (`--reference-from`), written where `both_arms` finds a
    finished arm; the note that says where it came from."""
    earlier = json.loads(Path(args.reference_from).read_text())
    if earlier["details"].get("budget") != args.budget:
        raise SystemExit(f"fit_vs_recipe: {args.reference_from} was measured with --budget "
                         f"{earlier['details'].get('budget')}, not {args.budget}")
    (work / "recipe.json").write_text(json.dumps(earlier["details"]["recipe"], indent=1))
    return (f"recipe arm reused from {args.reference_from} (measured {earlier.get('when')}, "
            f"{earlier['details'].get('threads_per_arm')} thread(s)), not trained again")


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def emorec(*args: str) -> None:
    """One `python -m emorec` command; its output goes to this process's (the arm's log)."""
    subprocess.run([sys.executable, "-m", "emorec", *args], check=True, cwd=REPO)


def splits_csv(args, work: Path) -> Path:
    from bench_fit import fer_folds

    args.folds = 1
    return next(iter(fer_folds(args, work)))[1]


def fit_arm(args, work: Path, csv_path: Path) -> dict:
    output = work / "fit"
    started = time.perf_counter()
    emorec("fit", str(csv_path), "--budget", args.budget, "--backbone", f"tf_efficientnet_lite0={WEIGHTS}",
           "--image-size", str(args.image_size), "--output", str(output), "--cache-dir", str(work / "features"),
           *(("--views", "1", "--sizes", "64", "--heads", "logreg,linear") if args.quick else ()))
    state = json.loads((output / "fit.json").read_text())
    with (output / "leaderboard.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {"chosen": state.get("best"), "test": state.get("test"), "budget_spent_s": state.get("spent_s"),
            "wall_s": round(time.perf_counter() - started, 1), "leaderboard": rows}


def recipe_arm(args, work: Path, csv_path: Path) -> dict:
    from emorec.fit.budget import parse_duration

    run = work / "runs" / "faces"
    started = time.perf_counter()
    if (run / "checkpoints" / "last.pt").is_file() and not (run / "summary.json").is_file():
        emorec("train", "--resume", str(run))  # killed mid-run: its own config, time limit included
    elif not (run / "summary.json").is_file():
        emorec("train", "--config", str(REPO / "configs" / "faces.yaml"), "--set", f"data.source={csv_path}",
               f"train.time_limit_s={parse_duration(args.budget):.0f}", f"train.epochs={args.recipe_epochs}",
               f"model.weights={WEIGHTS}", f"train.output_dir={work / 'runs'}", "train.name=faces",
               *(("data.image_size=64",) if args.quick else ()))
    trained_s = time.perf_counter() - started
    emorec("evaluate", str(run), "--split", "test")
    results = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    one, tta = results["metrics"], results["metrics_tta"] or {}
    test = {"accuracy": one["accuracy"], "macro_f1": one["macro_f1"],
            "per_class_f1": {name: m["f1"] for name, m in one["per_class"].items()},
            "num_samples": one["num_samples"], "tta_mode": results["tta"]["mode"] if tta else None}
    if tta:
        test.update(tta_accuracy=tta["accuracy"], tta_macro_f1=tta["macro_f1"])
    summary = json.loads((run / "summary.json").read_text())
    return {"test": test, "epochs_completed": summary.get("epochs_completed"), "best_epoch": summary.get("best_epoch"),
            "stopped_early": summary.get("stopped_early"), "train_wall_s": round(trained_s, 1),
            "wall_s": round(time.perf_counter() - started, 1)}


def run_arm(args, work: Path) -> None:
    csv_path = splits_csv(args, work)
    result = (fit_arm if args.arm == "fit" else recipe_arm)(args, work, csv_path)
    out = work / f"{args.arm}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(out)


def both_arms(args, work: Path) -> dict:
    """Start the arms not finished yet side by side, each with its own threads and log."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads_per_arm), "OMP_WAIT_POLICY": "PASSIVE"}
    running = {}
    for arm in ("fit", "recipe"):
        if (work / f"{arm}.json").is_file():
            log(f"{arm}: finished earlier ({work / f'{arm}.json'})")
            continue
        command = [sys.executable, __file__, "--arm", arm, *sys.argv[1:]]
        log(f"{arm}: started, log {work / f'{arm}.log'}")
        running[arm] = subprocess.Popen(command, env=env, stdout=(work / f"{arm}.log").open("a"),
                                        stderr=subprocess.STDOUT)
    failed = [arm for arm, proc in running.items() if proc.wait() != 0]
    if failed:
        raise SystemExit(f"fit_vs_recipe: the {' and '.join(failed)} arm failed; see {work}/<arm>.log")
    return {arm: json.loads((work / f"{arm}.json").read_text()) for arm in ("fit", "recipe")}


def headline_figure(test: dict) -> float:
    """Test top-1 in points: with TTA where the model's config turns it on, as evaluate reports."""
    return 100 * test.get("tta_accuracy", test["accuracy"])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.limit, args.budget, args.recipe_epochs = args.limit or 600, "3m", 1
    if not WEIGHTS.is_file() or not (SHARED / "datasets" / "fer2013").is_dir():
        print(f"fit_vs_recipe: skipped, needs {WEIGHTS} and ../shared/datasets/fer2013 (the ../shared folder)")
        return 0
    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    if args.arm != "both":
        run_arm(args, work)
        return 0
    reused = reuse_reference(args, work) if args.reference_from and args.arm == "both" else None
    arms = both_arms(args, work)
    fit_top1, recipe_top1 = headline_figure(arms["fit"]["test"]), headline_figure(arms["recipe"]["test"])
    details = {"budget": args.budget, "threads_per_arm": args.threads_per_arm, "recipe_epochs": args.recipe_epochs,
               "image_size": args.image_size, **arms}
    notes = [f"fit chose {arms['fit']['chosen']}; {fit_top1 - recipe_top1:+.1f} points test top-1 against faces.yaml "
             f"(target: no worse than -1)"] + ([reused] if reused else [])
    finish("fit_vs_recipe", args, fit_top1, recipe_top1, "% test top-1", details, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
