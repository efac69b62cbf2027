"""Speed of head-only training: 80 epochs on 20,000 cached feature vectors, 2 CPU threads.

emorec    `fit_head` with the recipe (attention + MLP head, focal loss with class weights, weighted
          sampler, AdamW + OneCycle, feature mixup), early stopping disabled so all 80 epochs
          run; once with the default head [1024, 512, 256] (2.2M weights on 1280-d features)
          and once with the narrow head [256, 128, 64] (0.58M) that bench_accuracy.py also
          offers to validation.
reference the same head, loss and optimiser in a plain torch loop: a DataLoader over a
          TensorDataset at the image batch size (32), float32, per-sample collation. It is run
          for a few epochs and its per-epoch time multiplied to 80 (stated in the output).
Target (issue 7): under 60 s for the emorec run. Synthetic features: 1280 channels (the width of
tf_efficientnet_lite0), 7 imbalanced classes, 3 cached views per vector.

    python benchmarks/bench_head_speed.py          # full: 80 epochs
    python benchmarks/bench_head_speed.py --quick  # 8 epochs, 2,000 vectors
Last line: `head_speed: emorec X vs reference Y s ratio=R` (the default head; the narrow head's time
is on the line before it and in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# Set before torch starts OpenMP: on a shared machine (more busy threads than cores) OpenMP's
# default spin-waiting makes every barrier wait for a descheduled thread; measured 12x slower
# steps here (1.74 s vs 0.15 s per batch of 1024). Passive waiting costs little on idle cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from _common import cpu_model  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
TARGET_S = 60.0
NARROW = [256, 128, 64]


def synthetic(n: int, channels: int, classes: int, views: int, seed: int):
    """Class-dependent means plus noise, FER-like imbalance (one class 15x rarer)."""
    g = torch.Generator().manual_seed(seed)
    share = torch.tensor([1.0, 0.1, 1.0, 1.6, 1.1, 1.1, 0.7])[:classes]
    y = torch.multinomial(share / share.sum(), n, replacement=True, generator=g)
    centres = torch.randn(classes, channels, generator=g)
    x = centres[y][:, None, :] * 0.3 + torch.randn(n, views, channels, generator=g)
    return x.relu(), y  # ReLU-like features, as a pooled CNN map is non-negative


def make_cfg(epochs: int, hidden_dims=None):
    from emorec.config import Config

    cfg = Config()
    if hidden_dims is not None:
        cfg.model.hidden_dims = list(hidden_dims)
    cfg.train.epochs = epochs
    cfg.train.patience = 0  # all epochs run: this measures speed, not convergence
    cfg.train.device = "cpu"
    return cfg


def make_head(cfg, channels: int, classes: int):
    from emorec.models.head import EmotionHead

    m = cfg.model
    return EmotionHead(channels, classes, m.attention, m.attention_reduction, m.hidden_dims, m.dropout, m.activation)


def run_emorec(cfg, x, y, xv, yv, classes) -> tuple[float, float]:
    from emorec.features.head_training import fit_head

    head = make_head(cfg, x.shape[2], classes)
    t = time.perf_counter()
    res = fit_head(head, x, y, xv, yv, cfg, classes)
    return time.perf_counter() - t, res.best_metric


def run_reference(cfg, x, y, classes, epochs: int) -> float:
    """A plain loop as one would first write it; returns seconds per epoch."""
    from emorec.data.sampling import class_weights
    from emorec.training.losses import build_loss

    head = make_head(cfg, x.shape[2], classes)
    loss_fn = build_loss(cfg.loss, class_weights(y.tolist(), classes))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.optim.lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:, 0], y), batch_size=cfg.data.batch_size, shuffle=True)
    head.train()
    t = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = loss_fn(head(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - t) / epochs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 vectors, 8 epochs, 1 reference epoch")
    p.add_argument("--vectors", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--reference-epochs", type=int, default=2, help="reference epochs actually run")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.vectors, args.epochs, args.reference_epochs = 2000, 8, 1
    torch.set_num_threads(args.threads)
    channels, classes = 1280, 7
    # One draw split in two, so train and val share the class centres.
    n_val = max(500, args.vectors // 10)
    x, y = synthetic(args.vectors + n_val, channels, classes, views=3, seed=0)
    x, y, xv, yv = x[:args.vectors], y[:args.vectors], x[args.vectors:, :2], y[args.vectors:]
    cfg = make_cfg(args.epochs)

    from emorec.features.head_training import bf16_available, head_batch_size

    emorec_s, val_f1 = run_emorec(cfg, x, y, xv, yv, classes)
    narrow_s, narrow_f1 = run_emorec(make_cfg(args.epochs, NARROW), x, y, xv, yv, classes)
    ref_epoch_s = run_reference(cfg, x, y, classes, args.reference_epochs)
    ref_s = ref_epoch_s * args.epochs
    result = {
        "vectors": args.vectors,
        "epochs": args.epochs,
        "channels": channels,
        "head_hidden_dims": cfg.model.hidden_dims,
        "emorec_seconds": round(emorec_s, 2),
        "emorec_batch_size": head_batch_size(args.vectors, cfg.data.batch_size),
        "emorec_bf16_autocast": bf16_available(),
        "emorec_val_macro_f1": round(val_f1, 4),
        "narrow_head_hidden_dims": NARROW,
        "narrow_seconds": round(narrow_s, 2),
        "narrow_val_macro_f1": round(narrow_f1, 4),
        "narrow_meets_target": narrow_s < TARGET_S,
        "reference": f"plain torch loop, DataLoader batch {cfg.data.batch_size}, float32; "
        f"{args.reference_epochs} epoch(s) run, time x {args.epochs / args.reference_epochs:g}",
        "reference_seconds": round(ref_s, 2),
        "ratio": round(ref_s / emorec_s, 2),
        "target_seconds": TARGET_S,
        "meets_target": emorec_s < TARGET_S,
        "machine": {"cpu": cpu_model(), "cores_visible": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_avg_1m_at_end": os.getloadavg()[0], "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "quick": args.quick,
        "command": "python benchmarks/bench_head_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("head_speed_quick.json" if args.quick else "head_speed.json")
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    for name, secs in (("default head", emorec_s), ("narrow head", narrow_s)):
        print(f"target: {args.epochs} epochs x {args.vectors} vectors under {TARGET_S:.0f} s, {name} -> "
              f"{'met' if secs < TARGET_S else 'NOT met'} ({secs:.1f} s)")
    print(f"head_speed: emorec {emorec_s:.1f} vs reference {ref_s:.1f} s ratio={ref_s / emorec_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
