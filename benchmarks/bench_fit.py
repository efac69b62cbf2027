"""`emorec fit --budget B` against the linear probe, on the folds of bench_accuracy.py.

emorec     `emorec.fit.fit` per fold: the fold's train / val / test as a splits CSV, the backbones
           given (default: tf_efficientnet_lite0 with the weights in ../shared), the whole budget
           per fold (feature extraction included), choice by validation macro-F1, then the chosen
           model's test score (the only time the fold's test images are read).
reference  the linear probe of bench_accuracy.py: scikit-learn LogisticRegression on standardised
           centre-view features of tf_efficientnet_lite0 at the same image size, C in (0.01, 0.1, 1)
           chosen on the fold's validation split, scored once on its test split.
Emotion6 (1,584 images): 5 stratified folds, test = one fold, val = 15% of the rest (the same
folds as bench_accuracy.py, seed 0). FER-2013 (`--datasets fer2013`): official train / val, the
test split carved from train with byte-identical copies kept together, one carve per seed.

    python benchmarks/bench_fit.py                     # Emotion6, 5 folds x 30 min, 224 px, CPU
    python benchmarks/bench_fit.py --backbones lite0,lite1,lite2 --budget 30m
    python benchmarks/bench_fit.py --datasets fer2013 --image-size 112 --folds 1
    python benchmarks/bench_fit.py --only-folds 0      # one fold now; the others in later invocations
    python benchmarks/bench_fit.py --quick             # 200 images, 64 px, 2 folds, budget 3m: a smoke run
Last line: `fit: emorec X vs reference Y macro-F1 ratio=R` (mean test macro-F1 in points over
the folds; details, per-class F1, leaderboards and times in results/fit.json).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from _common import SHARED, finish, log, parser  # noqa: E402 (benchmarks/ is sys.path[0] for a script)

LITE = {f"lite{i}": f"tf_efficientnet_lite{i}" for i in range(3)}


def build_parser():
    p = parser(__doc__)
    p.add_argument("--datasets", default="emotion6", help="emotion6 and/or fer2013, comma-separated")
    p.add_argument("--backbones", default="lite0", help="comma-separated: lite0, lite1, lite2 (weights in "
                                                        "../shared) or timm names with hub weights")
    p.add_argument("--budget", default="30m", help="emorec fit budget per fold (default 30m)")
    p.add_argument("--folds", type=int, default=5, help="Emotion6 folds / FER-2013 seeds (default 5)")
    p.add_argument("--only-folds", default=None, help="comma-separated fold indices (e.g. 0 or 0,1) of the --folds "
                                                       "protocol to run now; finished folds are kept in "
                                                       "results/fit.partial.json and not run again, so the protocol "
                                                       "can be spread over several invocations")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--views", type=int, default=2, help="augmented views cached per training image")
    p.add_argument("--heads", default=None, help="candidate heads (default: emorec fit's whole grid)")
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="a random subset of N images per dataset")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--work-dir", default="/tmp/emorec_bench_fit", help="fold CSVs, fit outputs, feature caches")
    return p


def backbone_choices(text: str):
    from emorec.fit import BackboneChoice

    out = []
    for name in text.split(","):
        name = name.strip()
        if name in LITE:
            weights = SHARED / "weights" / LITE[name] / "model.safetensors"
            if not weights.is_file():
                return None, f"needs {weights} (the ../shared folder)"
            out.append(BackboneChoice(LITE[name], str(weights), pretrained=False))
        else:
            out.append(BackboneChoice(name))
    return out, None


def write_splits(path: Path, paths: list[str], labels: list[str], split_of: dict[int, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for i, (p, y) in enumerate(zip(paths, labels)):
            if i in split_of:
                w.writerow([p, y, split_of[i]])
    return path


def emotion6_folds(args, work: Path):
    """(fold, splits CSV) over bench_accuracy.py's folds."""
    from bench_accuracy import load_manifest

    m = load_manifest(SHARED / "datasets" / "emotion6", all_train=True, limit=args.limit, seed=0)
    names = sorted({s.label for s in m.samples})
    labels = np.array([names.index(s.label) for s in m.samples])
    for fold, train, val, test in checked_folds(labels, names, args.folds, m.source):
        split_of = {int(i): name for name, rows in (("train", train), ("val", val), ("test", test)) for i in rows}
        yield fold, write_splits(work / "emotion6" / f"fold{fold}.csv", [s.path for s in m.samples],
                                 [s.label for s in m.samples], split_of)


def checked_folds(labels: np.ndarray, names: list[str], n_folds: int, source) -> list:
    """bench_accuracy.py's (fold, train, val, test) rows, all of them before any fit runs; a class
    too small for them is emorec's one-line splitter error (`data/split.py`), not
    scikit-learn's "test_size = 5 should be greater or equal to the number of classes = 6"."""
    from bench_accuracy import folds_emotion6

    from emorec.data.split import too_few_images

    try:
        return list(folds_emotion6(labels, n_folds, seed=0))
    except ValueError as e:
        error = e
    # scikit-learn's conditions depend on the class count and on totals, so the fewest images per
    # class that work (classes being equal) are found by trying.
    minimum = next((m for m in range(2, 1000) if _folds_work(len(names), m, n_folds)), None)
    if minimum is None:
        raise error
    counts = np.bincount(labels, minlength=len(names))
    small = ({names[i]: int(c) for i, c in enumerate(counts) if c < minimum}
             or {names[counts.argmin()]: int(counts.min())})
    raise too_few_images(source, small, minimum, f"{n_folds} folds with a 15% val split need at least "
                                                 f"{minimum * len(names)} images in all: raise --limit")


def _folds_work(classes: int, per_class: int, n_folds: int) -> bool:
    """Whether bench_accuracy.py's folds split `classes` classes of `per_class` images each."""
    import warnings

    from bench_accuracy import folds_emotion6

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's small-class warnings, while trying sizes
        try:
            list(folds_emotion6(np.repeat(np.arange(classes), per_class), n_folds, seed=0))
        except ValueError:
            return False
    return True


def fer_folds(args, work: Path):
    """(seed, splits CSV): official train / val; test carved from train, copies kept together."""
    from bench_accuracy import load_manifest

    from emorec.data.manifest import Manifest, Sample
    from emorec.data.split import stratified_split
    from emorec.features.cache import file_sha256

    m = load_manifest(SHARED / "datasets" / "fer2013", all_train=False, limit=args.limit, seed=0)
    train = [s for s in m.samples if s.split == "train"]
    groups = [file_sha256(s.path) for s in train]
    for seed in range(args.folds):
        carved = stratified_split(Manifest([Sample(s.path, s.label, None) for s in train], "fer"), val_fraction=0.0,
                                  test_fraction=0.1, seed=seed, groups=groups)
        test = {s.path for s in carved.samples if s.split == "test"}
        split_of = {i: ("test" if s.path in test else "train") if s.split == "train" else s.split
                    for i, s in enumerate(m.samples)}
        yield seed, write_splits(work / "fer2013" / f"seed{seed}.csv", [s.path for s in m.samples],
                                 [s.label for s in m.samples], split_of)


def probe_score(splits_csv: Path, args, cache_dir: Path) -> dict:
    """bench_accuracy.py's linear probe on the fold: centre views of lite0 at the same size."""
    from bench_accuracy import linear_probe

    from emorec.data.manifest import read_manifest
    from emorec.features.extract import extract_features

    weights = SHARED / "weights" / "tf_efficientnet_lite0" / "model.safetensors"
    manifest = read_manifest(str(splits_csv))
    cache = extract_features(manifest, "tf_efficientnet_lite0", weights=str(weights), image_size=args.image_size,
                             augmented_views=0, grid=0, cache_dir=cache_dir, batch_size=32,
                             num_workers=args.workers, device=args.device, log=log, progress=False)
    arrays = {}
    for split in ("train", "val", "test"):
        s = cache.split(split)
        keep = np.flatnonzero(s.valid)
        arrays[split] = (np.asarray(s.pooled[keep, 0], dtype=np.float32), s.labels[keep])
    (xtr, ytr), (xva, yva), (xte, yte) = arrays["train"], arrays["val"], arrays["test"]
    scores, details = linear_probe(xtr, ytr, xva, yva, xte, yte, log)
    return {**scores, **details, "label_names": cache.label_names}


def run_folds(args, work: Path, backbones, heads, only, partial: Path, settings: dict, details: dict) -> None:
    """`emorec fit` and the reference probe on every fold not run yet, each fold saved to `partial`
    as soon as it is done."""
    from emorec.fit import fit

    for dataset in args.datasets.split(","):
        folds = emotion6_folds(args, work) if dataset == "emotion6" else fer_folds(args, work)
        for fold, splits_csv in folds:
            key = f"{dataset}/{fold}"
            if (only is not None and fold not in only) or key in details["folds"]:
                continue
            t = time.perf_counter()
            kwargs = {"heads": heads} if heads else {}
            result = fit(str(splits_csv), work / dataset / f"fit{fold}", args.budget, backbones,
                         image_size=args.image_size, views=args.views, finetune=not args.no_finetune,
                         cache_dir=work / "features", device=args.device, workers=args.workers, log=log,
                         progress=False, **kwargs)
            fit_seconds = time.perf_counter() - t
            probe = probe_score(splits_csv, args, work / "features")
            details["folds"][key] = {
                "chosen": result.best, "test": result.test, "fit_seconds": round(fit_seconds, 1),
                "probe": probe, "leaderboard": result.rows,
            }
            partial.parent.mkdir(parents=True, exist_ok=True)
            tmp = partial.with_suffix(".tmp")
            tmp.write_text(json.dumps({"settings": settings, "folds": details["folds"]}, indent=1, default=str))
            tmp.replace(partial)
            log(f"{key}: fit {100 * result.test['macro_f1']:.1f} ({result.best['candidate']}, {fit_seconds:.0f} s) "
                f"vs probe {100 * probe['macro_f1']:.1f} test macro-F1")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.limit, args.folds, args.image_size, args.views = args.limit or 200, 2, 64, 1
        args.budget, args.heads, args.no_finetune = "3m", args.heads or "logreg,linear", True
    import torch

    from emorec.errors import EmorecError

    if args.threads:
        torch.set_num_threads(args.threads)
    backbones, missing = backbone_choices(args.backbones)
    weights = SHARED / "weights" / "tf_efficientnet_lite0" / "model.safetensors"
    if backbones is None or not weights.is_file():
        print(f"fit: skipped, {missing or f'needs {weights} (the ../shared folder)'}")
        return 0
    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    heads = tuple(args.heads.split(",")) if args.heads else None
    details: dict = {"budget": args.budget, "backbones": args.backbones, "image_size": args.image_size,
                     "views": args.views, "folds": {}}
    only = {int(i) for i in args.only_folds.split(",")} if args.only_folds else None
    partial = Path(args.results) / f"fit{'_quick' if args.quick else ''}.partial.json"
    settings = {k: details[k] for k in ("budget", "backbones", "image_size", "views")}
    if args.quick:
        partial.unlink(missing_ok=True)
    earlier = json.loads(partial.read_text()) if partial.is_file() else {}
    if earlier and earlier.get("settings") != settings:
        print(f"fit: {partial} holds folds run with {earlier.get('settings')}; delete it or pass those settings")
        return 2
    details["folds"] = earlier.get("folds", {})
    started = time.perf_counter()
    try:
        run_folds(args, work, backbones, heads, only, partial, settings, details)
    except EmorecError as e:  # one line, as the emorec commands print it
        print(f"fit: {e}")
        return 2
    fit_f1 = [100 * f["test"]["macro_f1"] for f in details["folds"].values()]
    probe_f1 = [100 * f["probe"]["macro_f1"] for f in details["folds"].values()]
    if not fit_f1:
        print("fit: no fold was run (--only-folds outside --folds?)")
        return 2
    details["seconds"] = round(time.perf_counter() - started, 1)
    details["fit_macro_f1"] = {"mean": float(np.mean(fit_f1)), "std": float(np.std(fit_f1, ddof=1)) if len(fit_f1) > 1
                               else 0.0, "folds": fit_f1}
    details["probe_macro_f1"] = {"mean": float(np.mean(probe_f1)),
                                 "std": float(np.std(probe_f1, ddof=1)) if len(probe_f1) > 1 else 0.0,
                                 "folds": probe_f1}
    notes = [f"gain {np.mean(fit_f1) - np.mean(probe_f1):+.1f} points macro-F1 over {len(fit_f1)} of "
             f"{args.folds * len(args.datasets.split(','))} folds (target >= +3 on Emotion6, all 5 folds)"]
    finish("fit", args, float(np.mean(fit_f1)), float(np.mean(probe_f1)), "macro-F1", details, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
