"""Training step speed on CPU, in images/s, on synthetic input (the loader is bench_loader's job).

emorec     the recipe's full step through `training.engine.train_one_epoch`: `build_model`
           (timm backbone + channel attention + MLP head [1024, 512, 256]), `build_loss` (focal
           loss, class weights, label smoothing), `build_mixup` (MixUp/CutMix), AdamW with
           OneCycle from `build_optimizer` / `build_scheduler`, gradient accumulation 2 and
           gradient clipping at 1.0.
reference  the bare loop a user writes: `timm.create_model(backbone, num_classes=K)`,
           cross-entropy, AdamW, one optimizer step per batch.
Same backbone (tf_efficientnet_lite0, pretrained=False), micro-batch 32 and input size 128 px on
both sides: affordable on 2 CPU cores and the backbone of the demo. Also measured: the effect of
channels_last and of bf16 autocast on the emorec step (on the bare loop while emorec's pieces are
missing). Variants run round-robin, the median over repeats is reported.

Target (issue 8): emorec >= 0.9x the bare loop.

    python benchmarks/bench_train_step.py --quick
    python benchmarks/bench_train_step.py --backbone resnet18 --size 160
Last line: `train_step: emorec X vs reference Y images/s ratio=R` (fp32, contiguous).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "train_step"
CLASSES = 7


def emorec_config(backbone: str, size: int, batch: int):
    from emorec.config import Config

    cfg = Config()
    cfg.model.backbone = backbone
    cfg.model.pretrained = False
    cfg.model.weights = None
    cfg.data.image_size = size
    cfg.data.batch_size = batch
    return cfg


def emorec_pieces() -> str | None:
    """None when every emorec piece of the full step imports, else the first reason it does not."""
    for name in ("emorec.models", "emorec.training.losses", "emorec.training.mixing", "emorec.training.optim",
                 "emorec.training.engine"):
        mod, why = C.optional_import(name)
        if mod is None:
            return why
    import emorec.models as m

    if not hasattr(m, "build_model"):
        return "emorec.models.build_model unavailable (not exported yet)"
    return None


class EmorecStep:
    """The recipe's training step; `run(n)` trains `n` micro-batches (n even: whole accumulation groups)."""

    def __init__(self, cfg, x, y, channels_last: bool, bf16: bool):
        import torch

        from emorec.models import build_model
        from emorec.training.engine import EpochProgress, LoopState, StepOptions
        from emorec.training.losses import build_loss
        from emorec.training.mixing import build_mixup
        from emorec.training.optim import build_optimizer, build_scheduler

        torch.manual_seed(0)
        model = build_model(cfg.model, CLASSES)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        counts = torch.bincount(y, minlength=CLASSES).float().clamp(min=1)
        weights = len(y) / (CLASSES * counts)  # sklearn's "balanced" weights of the synthetic labels
        self.model, self.x, self.y = model, x, y
        self.loss_fn = build_loss(cfg.loss, weights)
        self.mixup = build_mixup(cfg.augment, CLASSES, cfg.loss.label_smoothing)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, 10_000)  # never runs past its end here
        self.opts = StepOptions(accumulation_steps=cfg.optim.accumulation_steps, grad_clip=cfg.optim.grad_clip,
                                amp_dtype=torch.bfloat16 if bf16 else None, channels_last=channels_last)
        self.state = LoopState()
        self._progress = EpochProgress

    def run(self, n: int) -> None:
        import torch

        from emorec.training.engine import train_one_epoch

        batches = [(self.x, self.y, 0)] * n
        train_one_epoch(self.model, batches, self.loss_fn, self.optimizer, self.scheduler, torch.device("cpu"),
                        self.opts, self.state, self._progress(), n, mixup=self.mixup, show_progress=False)


class BareStep:
    """What a user writes first: timm model with a linear classifier, cross-entropy, AdamW."""

    def __init__(self, backbone: str, x, y, channels_last: bool, bf16: bool):
        import timm
        import torch

        torch.manual_seed(0)
        self.model = timm.create_model(backbone, pretrained=False, num_classes=CLASSES)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.y, self.bf16 = x, y, bf16
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)

    def run(self, n: int) -> None:
        import torch
        import torch.nn.functional as F

        self.model.train()
        for _ in range(n):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(self.x)
            loss = F.cross_entropy(logits.float(), self.y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm backbone (default: tf_efficientnet_lite0)")
    p.add_argument("--size", type=int, default=128, help="input size in px (default: 128)")
    p.add_argument("--batch", type=int, default=32, help="micro-batch size (default: 32)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    C.apply_threads(args)

    repeats = args.repeats or (5 if args.quick else 9)
    chunk = 2 if args.quick else 4  # micro-batches per timed repeat (even: whole accumulation groups)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, CLASSES, (args.batch,), generator=g)

    missing = emorec_pieces()
    variants: dict[str, object] = {"reference fp32": BareStep(args.backbone, x, y, False, False)}
    if missing is None:
        cfg = emorec_config(args.backbone, args.size, args.batch)
        variants["emorec fp32"] = EmorecStep(cfg, x, y, False, False)
        variants["emorec channels_last"] = EmorecStep(cfg, x, y, True, False)
        variants["emorec bf16 autocast"] = EmorecStep(cfg, x, y, False, True)
        effect_base = "emorec fp32"
    else:
        C.log(f"emorec step not measured: {missing}; channels_last / bf16 measured on the bare loop")
        variants["reference channels_last"] = BareStep(args.backbone, x, y, True, False)
        variants["reference bf16 autocast"] = BareStep(args.backbone, x, y, False, True)
        effect_base = "reference fp32"

    for name, v in variants.items():  # warm-up: first-call allocations, oneDNN primitive caches
        v.run(2)
        C.log(f"warmed up {name}")
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        for name, v in variants.items():
            times[name] += C.timed(lambda v=v: v.run(chunk), 1)
        C.log(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {args.batch * chunk / t[-1]:.1f}" for k, t in times.items()))

    results = {k: C.rate(args.batch * chunk, t) for k, t in times.items()}
    base = results[effect_base]["per_s"]
    effects = {k: results[k]["per_s"] / base for k in results if k != effect_base and not k.startswith(
        "reference fp32")}
    print(C.table([[k, r["per_s"], r["median_s"]] for k, r in results.items()], ["variant", "images/s", "median s"]))
    notes = [f"{args.backbone} at {args.size} px, micro-batch {args.batch}, {chunk} micro-batches per repeat, "
             f"{repeats} repeats, {torch.get_num_threads()} torch threads, synthetic input"]
    for k, e in effects.items():
        notes.append(f"{k}: x{e:.2f} vs {effect_base}")
    if missing:
        notes.append(f"emorec step not measured: {missing}")
    emo = results.get("emorec fp32", {}).get("per_s")
    C.finish(NAME, args, emo, results["reference fp32"]["per_s"], "images/s",
             {"backbone": args.backbone, "image_size": args.size, "batch": args.batch, "chunk": chunk,
              "repeats": repeats, "variants": results, "effects_vs": effect_base, "effects": effects,
              "emorec_unavailable": missing,
              "emorec_recipe": "attention head [1024,512,256], focal loss + class weights + label smoothing, "
                               "MixUp/CutMix, AdamW + OneCycle, accumulation 2, grad clip 1.0"},
             notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
