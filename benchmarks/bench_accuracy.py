"""Accuracy on real data: linear probe vs the baseline recipe vs the high-accuracy recipe.

All three configurations read the same frozen tf_efficientnet_lite0 features (one extraction per
dataset, cached), so the table compares heads and training recipes, not backbones:
  1. linear probe   sklearn LogisticRegression on standardised pooled features, C tuned on val
  2. baseline       linear head, plain cross-entropy, no sampler, no attention, centre view only
  3. recipe         attention + MLP head, focal loss + balanced class weights + label smoothing,
                    weighted sampler, AdamW + OneCycle, early stopping on val macro-F1, training on
                    the cached augmented views, TTA (centre + mirror) at test time
Model and hyper-parameter choices read the validation split only (for the recipe: feature mixup
on/off and the head's width, HEAD_WIDTHS, chosen once on the first split's validation score);
each test split is scored once per configuration. Emotion6 (1,584 images) uses 5 stratified
folds (test = one fold, val = 15% of the rest); FER-2013 uses its official train/val splits with a
10% test split carved from train by `emorec.data.split.stratified_split` (byte-identical copies
kept in one split), one carve and one training seed per seed.

The baseline and the recipe train through the product path, `emorec.api.train` with
`train.head_only` (the one trainer, as `emorec train --head-only`): each split's train / val /
test rows of the extracted cache are written with emorec's `CacheWriter` into a small per-split
feature cache (the baseline's holds the centre view only; the recipe's every cached view for
training, centre + mirror for val and test), the run's checkpoints/best.pt is loaded back as a
whole classifier and its head scores the cached test views (mean softmax over centre + mirror
when `eval.tta`). The trainer validates on the centre view, so the recipe's choice on val reads
the centre view too. Unreadable images (`valid` False in the cache) are left out of every split.

    python benchmarks/bench_accuracy.py            # both datasets, ~40 min on 2 CPU cores (former in-memory head loop)
    python benchmarks/bench_accuracy.py --quick    # a small subset, a smoke run of the pipeline
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from _common import CachedSplit, cpu_model, trainer_output_to, write_feature_cache  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS = REPO / "benchmarks" / "results"
PROBE_C = (0.01, 0.1, 1.0)
# The recipe's default head and a narrow one (a quarter of the width, ~6x fewer weights on
# 1280-d features): which one a dataset of ~1k-25k vectors supports is for validation to say.
HEAD_WIDTHS = ((1024, 512, 256), (256, 128, 64))


def scores(targets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Test scores from (N, K) class probabilities: top-1, macro / weighted F1 and the expected
    calibration error (emorec's 15-bin ECE, the one `emorec evaluate` reports)."""
    from emorec.evaluation.metrics import expected_calibration_error

    preds = probs.argmax(-1)
    return {
        "top1": float(accuracy_score(targets, preds)),
        "macro_f1": float(f1_score(targets, preds, average="macro")),
        "weighted_f1": float(f1_score(targets, preds, average="weighted")),
        "ece": float(expected_calibration_error(probs, targets)),
    }


def per_class_f1(targets: np.ndarray, preds: np.ndarray, k: int) -> list[float]:
    return [float(x) for x in f1_score(targets, preds, labels=list(range(k)), average=None, zero_division=0)]


def load_manifest(root: Path, all_train: bool, limit: int, seed: int):
    """labels.csv as a Manifest; `all_train` marks every sample train so each gets augmented views."""
    from emorec.data.manifest import Manifest, Sample, read_manifest

    m = read_manifest(str(root / "labels.csv"))
    samples = [Sample(s.path, s.label, "train" if all_train else s.split) for s in m.samples]
    if limit:
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), size=min(limit, len(samples)), replace=False))]
    return Manifest(samples, m.source)


def folds_emotion6(labels: np.ndarray, n_folds: int, seed: int):
    """(train, val, test) row indices per fold: test = a fold, val = 15% of the rest, stratified."""
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (rest, test) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        train, val = train_test_split(rest, test_size=0.15, stratify=labels[rest], random_state=seed + fold)
        yield fold, np.sort(train), np.sort(val), test


def splits_fer(cache, seeds: list[int]):
    """Official val; test carved from official train by emorec's stratified split, per seed.
    Byte-identical copies are carved as one group: without that, 206 of the 2,872 seed-0 test
    images (7%; 11 of the 44 disgust images) had a copy in the training part (measured)."""
    from emorec.data.manifest import Manifest, Sample
    from emorec.data.split import stratified_split
    from emorec.features.cache import file_sha256

    tr = cache.split("train")
    labels_names = cache.label_names
    rows = [Sample(p, labels_names[y], None) for p, y in zip(tr.paths, tr.labels)]
    groups = [file_sha256(p) for p in tr.paths]  # byte-identical copies share a group
    for seed in seeds:
        carved = stratified_split(Manifest(rows, "fer2013-train"), val_fraction=0.0, test_fraction=0.1, seed=seed,
                                  groups=groups)
        test_paths = {s.path for s in carved.samples if s.split == "test"}
        is_test = np.array([p in test_paths for p in tr.paths])
        yield seed, np.flatnonzero(~is_test), np.flatnonzero(is_test)


def linear_probe(xtr, ytr, xva, yva, xte, yte, log) -> tuple[dict, dict]:
    scaler = StandardScaler().fit(xtr)
    xtr, xva, xte = scaler.transform(xtr), scaler.transform(xva), scaler.transform(xte)
    best = None
    for c in PROBE_C:
        clf = LogisticRegression(C=c, max_iter=300, tol=1e-3).fit(xtr, ytr)
        f1 = f1_score(yva, clf.predict(xva), average="macro")
        log(f"    probe C={c:<5} val macro-F1 {f1:.4f}")
        if best is None or f1 > best[0]:
            best = (f1, c, clf)
    probs = best[2].predict_proba(xte)
    return scores(yte, probs), {"C": best[1], "val_macro_f1": float(best[0]),
                                "per_class_f1": per_class_f1(yte, probs.argmax(-1), len(set(ytr)))}


DEVICE = "cpu"


def recipe_config(kind: str, seed: int, mixup: bool, widths=HEAD_WIDTHS[0]):
    from emorec.config import Config

    cfg = Config()
    cfg.train.seed = seed
    cfg.train.device = DEVICE
    if kind == "baseline":
        cfg.model.attention = False
        cfg.model.hidden_dims = []
        cfg.model.dropout = []
        cfg.loss.name = "ce"
        cfg.loss.class_weights = "none"
        cfg.loss.label_smoothing = 0.0
        cfg.data.weighted_sampling = False
        cfg.augment.mixup_alpha = 0.0
        cfg.eval.tta = False
    else:
        cfg.model.hidden_dims = list(widths)
        if not mixup:
            cfg.augment.mixup_alpha = 0.0
    return cfg


@torch.no_grad()
def mean_softmax(head: torch.nn.Module, x: torch.Tensor, views: int, batch_size: int = 4096) -> torch.Tensor:
    """Mean softmax of `head` over the first `views` cached views of (N, V, C) features: the
    test-time augmentation `emorec evaluate` does on images (centre + mirror), on cached vectors."""
    head.eval()
    out = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start:start + batch_size, :views]
        n, v, c = chunk.shape
        logits = head(chunk.reshape(n * v, c).float()).float()
        out.append(logits.softmax(-1).reshape(n, v, -1).mean(1))
    return torch.cat(out)


def split_caches(cache, part_dir: Path, train: CachedSplit, val: CachedSplit, test: CachedSplit) -> dict:
    """The split's rows as two small feature caches of the same backbone and weights: "baseline"
    holds the centre view only (the baseline saw each image as is), "recipe" every cached view
    of the training rows and centre + mirror of val and test."""
    def first_views(s: CachedSplit, v: int) -> CachedSplit:
        return CachedSplit(s.paths, s.labels, s.pooled[:, :v], s.views[:v])

    stats = cache.index.get("stats", {})
    spec = {**cache.spec, "split_of": cache.key}
    return {
        "baseline": write_feature_cache(part_dir / "baseline_features", spec, stats, cache.label_names,
                                        {n: first_views(s, 1) for n, s in (("train", train), ("val", val), ("test", test))}),
        "recipe": write_feature_cache(part_dir / "recipe_features", spec, stats, cache.label_names,
                                      {"train": train, "val": first_views(val, 2), "test": first_views(test, 2)}),
    }


def train_and_test(kind, seed, choice, fold_cache, xte, yte, k, runs_dir: Path, log):
    """Train one head through `emorec.api.train` on `fold_cache` (val for early stopping), then
    load its best.pt and score the test split once. `choice` = (feature mixup, hidden widths)
    for the recipe; `xte` (N, V, C) holds the test rows' views in `fold_cache`."""
    from emorec.api import train
    from emorec.config import validate_config
    from emorec.run_model import load_run_model

    mixup, widths = choice
    cfg = recipe_config(kind, seed, mixup, widths)
    cfg.train.head_only, cfg.train.features_dir = True, str(fold_cache.root)
    cfg.train.output_dir = str(runs_dir)
    cfg.train.name = f"{kind}_mixup{int(mixup)}_{'-'.join(map(str, cfg.model.hidden_dims)) or 'linear'}"
    validate_config(cfg)
    t = time.perf_counter()
    with trainer_output_to(runs_dir / "trainer.log"):
        res = train(cfg)
    seconds = time.perf_counter() - t
    loaded = load_run_model(res.run_dir / "checkpoints" / "best.pt")
    views = xte.shape[1] if loaded.cfg.eval.tta else 1
    probs = mean_softmax(loaded.model.head, xte, views).numpy()
    preds = probs.argmax(-1)
    yte_np = yte.numpy()
    out = scores(yte_np, probs)
    log(
        f"    {kind:<8} mixup={int(mixup)} widths={'-'.join(map(str, cfg.model.hidden_dims)) or 'linear'} epochs {res.epochs_completed:3d} (best {res.best_epoch:3d}) "
        f"val F1 {res.best_metric:.4f}  test F1 {out['macro_f1']:.4f}  {seconds:.0f} s"
    )
    return out, {"val_macro_f1": res.best_metric, "best_epoch": res.best_epoch, "epochs_run": res.epochs_completed,
                 "seconds": round(seconds, 1), "per_class_f1": per_class_f1(yte_np, preds, k)}


def run_dataset(name, cache, partitions, work: Path, keep: bool, log) -> dict:
    """partitions: iterable of (id, train_rows, val_rows_or_None, test_rows) over the cache's
    train split (val_rows None: the cache's official val split)."""
    tr = cache.split("train")
    pooled, labels, paths = np.asarray(tr.pooled), tr.labels, np.asarray(tr.paths, dtype=object)
    official_val = cache.split("val") if "val" in cache.splits else None
    k = len(cache.label_names)

    def rows_of(rows, views: int | None = None) -> CachedSplit:
        rows = rows[tr.valid[rows]]
        v = views or pooled.shape[1]
        return CachedSplit(list(paths[rows]), labels[rows], pooled[rows][:, :v], tr.views[:v])

    results = {"probe": [], "baseline": [], "recipe": []}
    details = {"probe": [], "baseline": [], "recipe": []}
    choice = None
    for pid, train_rows, val_rows, test_rows in partitions:
        train = rows_of(train_rows)
        if val_rows is None:
            keep_val = np.flatnonzero(official_val.valid)
            val = CachedSplit([official_val.paths[i] for i in keep_val], official_val.labels[keep_val],
                              np.asarray(official_val.pooled)[keep_val], official_val.views)
        else:
            val = rows_of(val_rows, 2)
        test = rows_of(test_rows, 2)  # centre + mirror: the cached TTA views
        log(f"  {name} split {pid}: train {len(train.labels)} val {len(val.labels)} test {len(test.labels)}")
        part_dir = work / f"{name}_split{pid}"
        caches = split_caches(cache, part_dir, train, val, test)
        xte = torch.from_numpy(np.asarray(test.pooled, dtype=np.float32))
        yte = torch.from_numpy(test.labels).long()
        t = time.perf_counter()
        centre = [np.asarray(a.pooled[:, 0], dtype=np.float32) for a in (train, val, test)]
        s, d = linear_probe(centre[0], train.labels, centre[1], val.labels, centre[2], test.labels, log)
        d["seconds"] = round(time.perf_counter() - t, 1)
        log(f"    probe    C={d['C']} test F1 {s['macro_f1']:.4f}  {d['seconds']:.0f} s")
        results["probe"].append(s), details["probe"].append(d)
        runs = part_dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        s, d = train_and_test("baseline", pid, (False, ()), caches["baseline"], xte[:, :1], yte, k, runs, log)
        results["baseline"].append(s), details["baseline"].append(d)
        if choice is None:
            # Feature mixup on/off and the head width: decided once, on the first split's
            # validation score (the test scores of the runs not chosen are never looked at).
            grid = [(mix, w) for w in HEAD_WIDTHS for mix in (True, False)]
            outcomes = {c: train_and_test("recipe", pid, c, caches["recipe"], xte, yte, k, runs, log) for c in grid}
            choice = max(outcomes, key=lambda c: outcomes[c][1]["val_macro_f1"])
            log(f"    recipe chosen on val: feature mixup {choice[0]}, widths {choice[1]}")
            s, d = outcomes[choice]
        else:
            s, d = train_and_test("recipe", pid, choice, caches["recipe"], xte, yte, k, runs, log)
        d["mixup"], d["hidden_dims"] = choice[0], list(choice[1])
        results["recipe"].append(s), details["recipe"].append(d)
        if not keep:  # a FER-2013 split's caches and run directories take ~0.5 GB
            shutil.rmtree(part_dir)
    summary = {}
    for conf, rows in results.items():
        summary[conf] = {
            m: {"mean": float(np.mean([r[m] for r in rows])), "std": float(np.std([r[m] for r in rows], ddof=1)) if len(rows) > 1 else 0.0}
            for m in ("top1", "macro_f1", "weighted_f1", "ece")
        }
    return {"summary": summary, "runs": results, "details": details, "label_names": cache.label_names,
            "extraction": cache.index.get("stats", {}), "spec": {k_: v for k_, v in cache.spec.items() if k_ != "augment"}}


def table(all_results: dict, command: str) -> str:
    names = {"probe": "linear probe (LogReg, C on val)", "baseline": "baseline recipe (linear head, CE)",
             "recipe": "recipe (attention+MLP, focal, sampler, TTA)"}
    lines = ["| dataset | configuration | top-1 | macro-F1 | weighted F1 | ECE |", "|---|---|---:|---:|---:|---:|"]
    for ds, res in all_results.items():
        for conf, label in names.items():
            s = res["summary"][conf]
            cells = [f"{100 * s[m]['mean']:.1f} ± {100 * s[m]['std']:.1f}" for m in ("top1", "macro_f1", "weighted_f1", "ece")]
            lines.append(f"| {ds} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nCommand: `{command}`\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="emotion6,fer2013")
    p.add_argument("--shared", default=str(SHARED))
    p.add_argument("--cache-dir", default="/tmp/emorec_features")
    p.add_argument("--emotion6-size", type=int, default=224)
    p.add_argument("--emotion6-views", type=int, default=2)
    p.add_argument("--fer-size", type=int, default=96)
    p.add_argument("--fer-views", type=int, default=1)
    p.add_argument("--seeds", type=int, default=5, help="FER seeds / Emotion6 folds")
    p.add_argument("--limit", type=int, default=0, help="use a random subset of N images per dataset")
    p.add_argument("--quick", action="store_true", help="400 images per dataset, 64 px, 2 seeds")
    p.add_argument("--output", default=str(RESULTS / "accuracy.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="image decoding processes for extraction")
    p.add_argument("--device", default="cpu", help="extraction and head training device (cpu, cuda, auto)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="folder for each split's feature caches, run directories and trainer.log, kept afterwards "
                        "(default: a temporary folder, each split's part removed once it is scored)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if args.quick:
        args.limit, args.seeds, args.fer_size, args.emotion6_size = args.limit or 400, 2, 64, 64
        args.output = str(RESULTS / "accuracy_quick.json")
    torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    weights = shared / "weights" / "tf_efficientnet_lite0" / "model.safetensors"
    if not weights.is_file():
        print(f"bench_accuracy: skipped, needs {weights} (the ../shared folder)")
        return 0
    from emorec.features.extract import extract_features

    def log(msg):
        print(msg, flush=True)

    command = "python benchmarks/bench_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    all_results = {}
    seeds = list(range(args.seeds))
    caches, extract_seconds = {}, {}
    # Every extraction first (the long part, cached), then every head: a crash in training never
    # costs an extraction twice.
    for ds in args.datasets.split(","):
        t0 = time.perf_counter()
        root = shared / "datasets" / ds
        if ds == "emotion6":
            manifest = load_manifest(root, all_train=True, limit=args.limit, seed=0)
            size, views = args.emotion6_size, args.emotion6_views
        else:
            manifest = load_manifest(root, all_train=False, limit=args.limit, seed=0)
            size, views = args.fer_size, args.fer_views
        caches[ds] = extract_features(manifest, "tf_efficientnet_lite0", weights=str(weights), image_size=size,
                                      augmented_views=views, grid=0, cache_dir=args.cache_dir,
                                      batch_size=100 if size <= 128 else 32, num_workers=args.workers,
                                      device=args.device, log=log)
        extract_seconds[ds] = round(time.perf_counter() - t0, 1)
        log(f"{ds}: features ready in {extract_seconds[ds]:.0f} s ({caches[ds].root})")
    tmp = tempfile.TemporaryDirectory(prefix="emorec_accuracy_")
    work = args.work_dir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    # A fresh folder per invocation: the run names repeat between invocations.
    work = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S_"), dir=work))
    log(f"split caches and runs under {work}")
    for ds, cache in caches.items():
        t0 = time.perf_counter()
        if ds == "emotion6":
            labels = cache.split("train").labels
            parts = ((f, tr, va, te) for f, tr, va, te in folds_emotion6(labels, args.seeds, seed=0))
        else:
            parts = ((s, tr, None, te) for s, tr, te in splits_fer(cache, seeds))
        res = run_dataset(ds, cache, parts, work, args.work_dir is not None, log)
        res["heads_seconds"] = round(time.perf_counter() - t0, 1)
        res["extract_seconds_this_run"] = extract_seconds[ds]
        all_results[ds] = res
        partial = Path(args.output).with_suffix(".partial.json")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"command": command, "results": all_results}, indent=1))
    tmp.cleanup()
    out = {
        "command": command,
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "torch": str(torch.__version__), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - started, 1),
        "results": all_results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    md = table(all_results, command)
    Path(args.output).with_suffix(".md").write_text(md)
    print(md)
    for ds, res in all_results.items():
        gain = 100 * (res["summary"]["recipe"]["macro_f1"]["mean"] - res["summary"]["probe"]["macro_f1"]["mean"])
        print(f"accuracy: {ds} recipe - probe macro-F1 = {gain:+.1f} points")
    print(f"total {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
