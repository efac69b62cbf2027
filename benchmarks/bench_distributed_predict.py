"""Scaling of `emorec predict` under torchrun: images/s with 1 rank and with N ranks (default 2).

emorec     `torchrun --nproc-per-node N -m emorec predict RUN --inputs-from LIST --output preds.csv`:
           N ranks, each predicting every N-th image into its part, rank 0 merging them.
reference  the same command with `--nproc-per-node 1`: one rank over the whole list.
On the CPU both use every core: 1 rank x C threads against N ranks x C/N threads (OMP_NUM_THREADS);
`--also-one-thread` adds 1 rank x C/N threads, the per-rank baseline of linear scaling. The
images/s are the command's own (the `total` line of the table rank 0 prints: every image over the
slowest rank's seconds from its first batch to its last record; loading the model and joining the
process group are not in it); each command's wall time, start-up included, is in the JSON.
Model: tf_efficientnet_lite0 with ../shared's weights and an untrained recipe head at 224 px,
saved as a run directory (speed does not depend on the head's weights). Inputs: N images spread
evenly over Emotion6's labels.csv (default 300; --quick 64), read once before timing so every
command finds them in the page cache.

Target (issue 26, on a multi-GPU node): >= 0.9x linear scaling, ratio >= 0.9 x N. The CPU figures
here share 2 cores among the ranks, so they show the overhead of sharding and merging, not scaling.

    python benchmarks/bench_distributed_predict.py --quick
    python benchmarks/bench_distributed_predict.py --ranks 8 --device cuda --images 20000   # a GPU node
Last line: `distributed_predict: emorec X vs reference Y images/s ratio=R` (R: N ranks over 1 rank).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "distributed_predict"
BACKBONE = "tf_efficientnet_lite0"


def lite0_run(run_dir: Path, weights: Path, labels: list[str]) -> Path:
    """A run directory holding lite0 (the given weights) with an untrained recipe head, 224 px."""
    import torch

    from emorec.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
    from emorec.config import Config
    from emorec.models.backbone import backbone_data_config
    from emorec.models.classifier import build_model

    cfg = Config()
    cfg.model.backbone, cfg.model.weights, cfg.model.pretrained = BACKBONE, str(weights), True
    cfg.data.image_size = 224
    torch.manual_seed(0)
    model = build_model(cfg.model, len(labels)).eval()
    data = backbone_data_config(model.backbone)
    save_checkpoint(run_dir / "checkpoints" / "best.pt", {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": model.state_dict(), "ema": None, "epoch": 0,
        "config": cfg.to_dict(), "label_map": labels, "model_signature": {}, "versions": {}, "best_metric": 0.0,
        "data_mean": list(data["mean"]), "data_std": list(data["std"])})
    return run_dir


def image_list(dataset: Path, count: int, path: Path) -> tuple[Path, list[str]]:
    """`count` images spread evenly over the dataset's labels.csv, as a text list; and the labels."""
    with (dataset / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    step = max(1, len(rows) // count)
    chosen = [dataset / r["path"] for r in rows[::step][:count]]
    path.write_text("".join(f"{p}\n" for p in chosen))
    for image in chosen:  # into the page cache, so the first command measured does not pay for the disk
        image.read_bytes()
    return path, sorted({r["label"] for r in rows})


def run_ranks(ranks: int, threads: int, run: Path, inputs: Path, output: Path, device: str, batch_size: int) -> dict:
    """One `torchrun -m emorec predict`; its images/s (the `total` line), wall time and load."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), "-m", "emorec",
           "predict", str(run), "--inputs-from", str(inputs), "--output", str(output), "--device", device,
           "--batch-size", str(batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    table = [line.split() for line in proc.stderr.splitlines() if line.split()[:1] and
             (line.split()[0] == "total" or line.split()[0].isdigit()) and len(line.split()) == 4]
    total = next(t for t in table if t[0] == "total")
    return {"ranks": ranks, "threads_per_rank": threads, "images": int(total[1]), "seconds": float(total[2]),
            "images_per_s": float(total[3]), "wall_s": round(wall, 2),
            "per_rank": [{"rank": int(t[0]), "images": int(t[1]), "seconds": float(t[2]), "images_per_s": float(t[3])}
                         for t in table if t[0] != "total"],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--ranks", type=int, default=2, help="ranks of the measured job (default 2)")
    p.add_argument("--images", type=int, default=None, help="Emotion6 images predicted (default 300; --quick 64)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: each rank on cuda:LOCAL_RANK")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--also-one-thread", action="store_true",
                   help="also measure 1 rank with C/N threads: the per-rank baseline of linear scaling on the CPU")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    dataset = C.shared_dataset("emotion6")
    weights = C.SHARED / "weights" / BACKBONE / "model.safetensors"
    if dataset is None or not weights.is_file():
        print(f"needs {C.SHARED}/datasets/emotion6 and {weights}", file=sys.stderr)
        return 2
    count = args.images or (64 if args.quick else 300)
    work = Path(tempfile.mkdtemp(prefix="emorec_bench_ranks_"))
    inputs, labels = image_list(dataset, count, work / "images.txt")
    run = lite0_run(work / "run", weights, labels)
    cores = C.usable_cores()
    per_rank = max(1, cores // args.ranks)
    threads = per_rank if args.device.startswith("cuda") else cores
    reference = run_ranks(1, threads, run, inputs, work / "one.csv", args.device, args.batch_size)
    C.log(f"1 rank x {threads} threads: {reference['images_per_s']:.1f} images/s")
    measured = run_ranks(args.ranks, per_rank, run, inputs, work / "ranks.csv", args.device, args.batch_size)
    C.log(f"{args.ranks} ranks x {per_rank} threads: {measured['images_per_s']:.1f} images/s")
    runs = [reference, measured]
    if args.also_one_thread and threads != per_rank:
        runs.append(run_ranks(1, per_rank, run, inputs, work / "one_thin.csv", args.device, args.batch_size))
    same = (work / "one.csv").read_bytes() == (work / "ranks.csv").read_bytes()
    print(C.table([[f"{r['ranks']} rank(s) x {r['threads_per_rank']} threads", r["images_per_s"], r["seconds"],
                    r["wall_s"]] for r in runs], ["job", "images/s", "seconds", "wall s"]))
    gpu_command = (f"torchrun --nproc-per-node 8 -m emorec predict RUN --inputs-from LIST --output preds.csv "
                   f"--device cuda --batch-size 128   # or: python {Path(__file__).name} --ranks 8 --device cuda "
                   "--images 20000")
    print(f"on a multi-GPU node: {gpu_command}")
    scaling = measured["images_per_s"] / reference["images_per_s"]
    C.finish(NAME, args, measured["images_per_s"], reference["images_per_s"], "images/s",
             {"images": count, "model": f"{BACKBONE} ({weights.name}) + untrained recipe head, 224 px",
              "cores": cores, "runs": runs, "same_output_bytes": same, "scaling_over_linear": scaling / args.ranks,
              "gpu_command": gpu_command},
             device=args.device,
             notes=[f"{args.ranks} ranks give {scaling:.2f}x one rank ({scaling / args.ranks:.0%} of linear); target on a "
                    "GPU node >= 90% of linear", f"merged outputs of 1 and {args.ranks} ranks byte-identical: {same}"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
