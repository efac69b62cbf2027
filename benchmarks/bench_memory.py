"""Peak resident memory of `emorec train` (one epoch) and `emorec evaluate`, at two dataset sizes.

Memory should stay flat in the number of images: a run over all 32,298 FER-2013 faces should peak
about where a run over 1,000 does (images are read lazily; only paths, labels and per-image logits
grow with the dataset). Each command runs as a subprocess of this script while it samples the
process tree every 0.2 s:
  main peak RSS   the command's own process, from the kernel (`os.wait4` rusage, ru_maxrss)
  tree peak PSS   the command plus its DataLoader workers, proportional set size summed (psutil;
                  shared copy-on-write pages counted once), the memory the run really costs
Runs: `emorec train` for 1 epoch (test_resnet, pretrained=False, 48 px, batch 64, 2 workers, the
recipe's augmentation, loss and sampler) on a CSV of N FER-2013 faces (80/10/10 split), then
`emorec evaluate` of that run on all N (no TTA). Sizes: 1,000 and 32,298 (--quick: 500 and 2,000).

The headline compares the training epoch at the large size ("emorec") with the small size
("reference"): ratio = small peak / large peak, so 1.00 means perfectly flat and smaller means
memory grows with the dataset.

    python benchmarks/bench_memory.py --quick
    python benchmarks/bench_memory.py             # 1,000 vs 32,298: several minutes on 2 cores
Last line: `memory: emorec X vs reference Y MB ratio=R` (tree peak PSS of one training epoch).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "memory"
MB = 1024 * 1024
TRAIN_SET = ["model.backbone=test_resnet", "model.pretrained=false", "data.image_size=48", "data.batch_size=64",
             "data.num_workers=2", "train.epochs=1", "eval.tta=false", "eval.batch_size=64", "optim.accumulation_steps=1"]


def write_subset(labels_csv: Path, n: int, out: Path) -> int:
    """CSV of `n` faces spread over the sorted list (every class present), absolute paths, about
    80/10/10 within each class, so even the rarest class has validation and test images."""
    with open(labels_csv, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    if n < len(rows):
        step = len(rows) / n
        rows = [rows[int(i * step)] for i in range(n)]
    root = labels_csv.parent
    seen: dict[str, int] = {}
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for r in rows:
            j = seen[r["label"]] = seen.get(r["label"], -1) + 1
            w.writerow([str((root / r["path"]).resolve()), r["label"], "val" if j % 10 == 0 else "test" if j % 10 == 1 else "train"])
    return len(rows)


class TreeSampler(threading.Thread):
    """Polls a process and its descendants; keeps the peak summed RSS and PSS."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self.max_procs = 0
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            rss = pss = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    full = p.memory_full_info()
                    rss += full.rss
                    pss += getattr(full, "pss", full.rss)
                except psutil.Error:
                    pass
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.max_procs = max(self.max_procs, len(procs))
            self.done.wait(self.interval)


def measure(cmd: list[str], cwd: Path) -> dict:
    """Run `cmd`; its wall time, exit code, main peak RSS (kernel) and tree peaks (sampled), in MB."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join()
    res = {"command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
           "exit_code": proc.returncode, "seconds": time.perf_counter() - t,
           "main_peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
           "tree_peak_rss_mb": sampler.peak_rss / MB, "tree_peak_pss_mb": sampler.peak_pss / MB,
           "processes": sampler.max_procs}
    if proc.returncode != 0:
        res["error"] = output.strip().splitlines()[-1] if output.strip() else "no output"
    return res


def emorec_ready() -> str | None:
    """Whether train and evaluate can run, found without importing them: this process must stay
    small, because a child's ru_maxrss starts from the parent's resident size at fork (Linux)."""
    import importlib.util

    for name in ("emorec.training.trainer", "emorec.evaluation.evaluate", "emorec.data.dataset", "emorec.models",
                 "emorec.training.losses", "emorec.training.mixing", "emorec.training.optim"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{name} unavailable (not found)"
    return None


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--sizes", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="numbers of images (default 1000 32298; quick 500 4000)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    small, large = args.sizes or ((500, 2000) if args.quick else (1000, 32298))
    fer = C.shared_dataset("fer2013")
    if fer is None:
        print(f"{NAME}: skipped, ../shared/datasets/fer2013 is needed (not found under {C.SHARED})")
        return 0
    try:
        import psutil  # noqa: F401
    except ImportError:
        print(f"{NAME}: skipped, psutil is needed to sample the DataLoader workers' memory (pip install psutil)")
        return 0
    missing = emorec_ready()
    if missing:
        C.log(f"train/evaluate not measurable: {missing}")

    tmp = Path(tempfile.mkdtemp(prefix="emorec_bench_memory_"))
    runs: dict[str, dict] = {}
    try:
        for n in (small, large):
            csv_path = tmp / f"fer_{n}.csv"
            count = write_subset(fer / "labels.csv", n, csv_path)
            if missing:
                break
            name = f"mem_{count}"
            train_cmd = [sys.executable, "-m", "emorec", "train", "--set", f"data.source={csv_path}",
                         f"train.output_dir={tmp / 'runs'}", f"train.name={name}", *TRAIN_SET]
            r = measure(train_cmd, C.REPO)
            r["images"] = count
            runs[f"train {count}"] = r
            C.log(f"train {count}: main {r['main_peak_rss_mb']:.0f} MB, tree PSS {r['tree_peak_pss_mb']:.0f} MB, "
                  f"{r['seconds']:.0f} s{' ERROR ' + r['error'] if 'error' in r else ''}")
            if "error" in r:
                continue
            eval_cmd = [sys.executable, "-m", "emorec", "evaluate", str(tmp / "runs" / name), "--data", str(csv_path),
                        "--no-tta", "--workers", "2", "--batch-size", "64", "--output", str(tmp / f"eval_{count}")]
            r = measure(eval_cmd, C.REPO)
            r["images"] = count
            runs[f"evaluate {count}"] = r
            C.log(f"evaluate {count}: main {r['main_peak_rss_mb']:.0f} MB, tree PSS {r['tree_peak_pss_mb']:.0f} MB, "
                  f"{r['seconds']:.0f} s{' ERROR ' + r['error'] if 'error' in r else ''}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [[k, r["main_peak_rss_mb"], r["tree_peak_rss_mb"], r["tree_peak_pss_mb"], r["seconds"]] for k, r in runs.items()]
    if rows:
        print(C.table(rows, ["run", "main RSS MB", "tree RSS MB", "tree PSS MB", "seconds"]))
    notes = [f"FER-2013 subsets of {small} and {large} images; train: {' '.join(TRAIN_SET)}"]
    if missing:
        notes.append(f"not measured: {missing}")
    for k, r in runs.items():
        if "error" in r:
            notes.append(f"{k} failed (exit {r['exit_code']}): {r['error']}")
    big, little = runs.get(f"train {large}"), runs.get(f"train {small}")
    ok = big and little and "error" not in big and "error" not in little
    for kind in ("evaluate",):
        a, b = runs.get(f"{kind} {small}"), runs.get(f"{kind} {large}")
        if a and b and "error" not in a and "error" not in b:
            notes.append(f"{kind}: tree PSS {a['tree_peak_pss_mb']:.0f} MB at {small} vs {b['tree_peak_pss_mb']:.0f} MB "
                         f"at {large} (x{b['tree_peak_pss_mb'] / a['tree_peak_pss_mb']:.2f})")
    emo = big["tree_peak_pss_mb"] if ok else None
    ref = little["tree_peak_pss_mb"] if ok else None
    C.finish(NAME, args, emo, ref, "MB", {"sizes": [small, large], "runs": runs, "unavailable": missing,
                                          "headline": f"training epoch tree peak PSS at {large} ('emorec') vs {small} "
                                                      "('reference') images; ratio = small / large (1.00 = flat)"},
             r=(ref / emo) if ok else None, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
