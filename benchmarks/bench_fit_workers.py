"""Two `emorec fit` processes sharing one search (`--storage`) against one process, same budget.

Issue 23's target: two processes sharing one `--storage` finish one search, every candidate run
once, one leaderboard, one `best/`. Here both run on this machine with the same OUTPUT and one
thread each (a second machine would have its own OUTPUT and feature cache, and the same URL).

emorec     two processes started together: `emorec fit DATA --budget B --output OUT2 --storage
           sqlite:///OUT2.db ...`, OMP_NUM_THREADS=1 each.
reference  one process, same command without --storage, both threads.
Checked from the shared study: no candidate finished twice (COMPLETE or PRUNED trials per
candidate), every row of leaderboard.csv once, best/ present, both processes exit 0. The headline
is the candidates finished (done or pruned) within the budget.

    python benchmarks/bench_fit_workers.py --budget 8m          # Emotion6, 160 px, 1 view
    python benchmarks/bench_fit_workers.py --quick              # 200 images, 64 px, 2 minutes
Last line: `fit_workers: emorec N vs reference M candidates finished ratio=R`; the per-process
logs, trial counts and leaderboards are in results/fit_workers.json.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _common import REPO, SHARED, finish, log, parser  # noqa: E402 (benchmarks/ is sys.path[0] for a script)

WEIGHTS = SHARED / "weights" / "tf_efficientnet_lite0" / "model.safetensors"
DATA = SHARED / "datasets" / "emotion6"


def build_parser():
    p = parser(__doc__)
    p.add_argument("--budget", default="8m")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="a stratified subset of N images (0: all)")
    p.add_argument("--work-dir", default="/tmp/emorec_bench_fit_workers")
    return p


def subset_csv(data: Path, limit: int, out: Path) -> Path:
    """A CSV of every `limit`-th share of the dataset's images, per class, sorted (deterministic)."""
    from emorec.data.manifest import read_manifest

    manifest = read_manifest(str(data))
    by_class: dict[str, list] = {}
    for s in manifest.samples:
        by_class.setdefault(s.label, []).append(s.path)
    per_class = max(2, limit // max(1, len(by_class))) if limit else None
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for label, paths in sorted(by_class.items()):
            for path in sorted(paths)[:per_class]:
                w.writerow([path, label])
    return out


def fit_command(args, source: Path, output: Path, storage: str | None) -> list[str]:
    return [sys.executable, "-m", "emorec", "fit", str(source), "--budget", args.budget, "--backbone",
            f"tf_efficientnet_lite0={WEIGHTS}", "--image-size", str(args.image_size), "--views", str(args.views),
            "--output", str(output), "--cache-dir", str(output.parent / f"{output.name}-features"),
            *(("--storage", storage) if storage else ()),
            *(("--heads", "logreg,linear", "--sizes", "64") if args.quick else ())]


def run_processes(commands: list[list[str]], threads: int, logs: list[Path]) -> tuple[list[int], float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, cwd=REPO, stdout=p.open("w"), stderr=subprocess.STDOUT)
             for c, p in zip(commands, logs)]
    return [p.wait() for p in procs], time.perf_counter() - started


def leaderboard(output: Path) -> list[dict]:
    with (output / "leaderboard.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def finished_per_candidate(storage: str) -> dict[str, int]:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="emorec-fit", storage=storage)
    return dict(Counter(t.user_attrs.get("candidate") for t in study.get_trials(deepcopy=False)
                        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)))


def finished(rows: list[dict]) -> int:
    return sum(r["status"] in ("done", "pruned") and r["kind"] != "extract" for r in rows)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.limit, args.budget, args.image_size = args.limit or 200, "2m", 64
    if not WEIGHTS.is_file() or not DATA.is_dir():
        print(f"fit_workers: skipped, needs {WEIGHTS} and {DATA} (the ../shared folder)")
        return 0
    import shutil

    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    shutil.rmtree(work, ignore_errors=True)  # a fresh search each time: the budget is what is measured
    work.mkdir(parents=True)  # the process logs land here before any data.csv (the full data set has none)
    source = subset_csv(DATA, args.limit, work / "data.csv") if args.limit else DATA
    two, storage = work / "two", f"sqlite:///{work / 'two.db'}"
    log(f"two processes sharing {storage}, {args.budget} each")
    codes2, wall2 = run_processes([fit_command(args, source, two, storage)] * 2, 1,
                                  [work / "two.a.log", work / "two.b.log"])
    log(f"one process, {args.budget}")
    one = work / "one"
    codes1, wall1 = run_processes([fit_command(args, source, one, None)], 2, [work / "one.log"])
    rows2, rows1 = leaderboard(two), leaderboard(one)
    counts = finished_per_candidate(storage)
    ids = [r["candidate"] for r in rows2]
    checks = {
        "both_processes_exit_0": codes2 == [0, 0],
        "no_candidate_finished_twice": all(n == 1 for n in counts.values()),
        "leaderboard_rows_once": len(ids) == len(set(ids)),
        "one_best_dir": (two / "best" / "checkpoints").is_dir(),
    }
    for name, ok in checks.items():
        log(f"{name}: {'yes' if ok else 'NO'}")
    details = {"budget": args.budget, "image_size": args.image_size, "views": args.views, "limit": args.limit,
               "checks": checks, "finished_trials_per_candidate": counts,
               "two": {"exit_codes": codes2, "wall_s": round(wall2, 1), "leaderboard": rows2,
                       "best": json.loads((two / "fit.json").read_text()).get("best") if codes2 == [0, 0] else None},
               "one": {"exit_codes": codes1, "wall_s": round(wall1, 1), "leaderboard": rows1}}
    notes = [f"checks: {', '.join(k for k, ok in checks.items() if ok)} passed; "
             f"failed: {', '.join(k for k, ok in checks.items() if not ok) or 'none'}"]
    finish("fit_workers", args, float(finished(rows2)), float(finished(rows1)), "candidates finished", details,
           notes=notes)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
