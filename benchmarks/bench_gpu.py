"""Training speed on a CUDA GPU: ResNet-50 at 224 px, synthetic input and real JPEGs end to end.

Skips cleanly (one line, exit 0) without CUDA. Needs only a checkout with `pip install -e .`.

Synthetic input (the GPU alone), images/s of training:
  reference       the bare loop: `timm.create_model("resnet50", num_classes=K)`, fp32, eager,
                  cross-entropy, AdamW, one optimizer step per batch
  reference fast  the same bare loop with AMP bf16 + channels_last + torch.compile
  emorec          emorec's full step (`training.engine.train_one_epoch`: recipe head with channel
                  attention, focal loss, MixUp/CutMix, accumulation 2, clipping at 1.0) with the
                  settings `emorec train` uses on CUDA: AMP bf16, channels_last, torch.compile
End to end on real JPEGs (--data, any folder of .jpg/.jpeg/.png, searched recursively):
  loader only     the emorec loader (`ManifestDataset` + recipe train transform, `collate_skip`)
                  with --workers workers, pinned memory, persistent workers, prefetch 4, copies to
                  the GPU with non_blocking=True
  emorec e2e      that loader feeding emorec's fastest step above
  reference e2e   torchvision's default PIL loader (what `ImageFolder` uses) with the same
                  transform, DataLoader settings and step
  tensor          `augment.backend=tensor`: the workers only decode and resize to uint8 squares
                  (`build_decode_transform`), `BatchAugment` runs the recipe's augmentation on the
                  GPU in batches, one micro-batch ahead (`training.device_augment.augment_ahead`,
                  as `emorec train` does); "loader only" includes that augmentation
The run is loader-bound when e2e throughput is close to the loader alone and well under the
synthetic step. Targets: above 2,500 images/s synthetic on an H100 (issue 8); with
`augment.backend=tensor`, e2e >= 0.8x the synthetic emorec step and >= 3,500 images/s for ResNet-50
at 224 px on an H100/H200 (issue 17). Without --data, photo-like JPEGs (500x375) are generated
in a temporary folder (stated in the output).

    python benchmarks/bench_gpu.py --data /path/to/jpegs --minutes 8
    python benchmarks/bench_gpu.py --quick
    python benchmarks/bench_gpu.py --data ../shared/datasets/emotion6/images --minutes 3 --loaders tensor,emorec
Last line: `gpu: emorec X vs reference Y images/s ratio=R` (synthetic, emorec full step with
bf16 + channels_last + compile vs the bare fp32 eager loop).
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "gpu"
CLASSES = 7
SIZE = 224
EXTENSIONS = {".jpg", ".jpeg", ".png"}


class Step:
    """One training configuration; `run(batches)` trains on an iterable of (images, targets, skipped)."""

    def __init__(self, kind: str, backbone: str, fast: bool, device, compile_: bool = True):
        import timm
        import torch

        torch.manual_seed(0)
        self.kind, self.device, self.fast = kind, device, fast
        self.amp_dtype = torch.bfloat16 if fast and device.type == "cuda" else None
        if kind == "emorec":
            from emorec.config import Config
            from emorec.models import build_model
            from emorec.training.engine import EpochProgress, LoopState, StepOptions
            from emorec.training.losses import build_loss
            from emorec.training.mixing import build_mixup
            from emorec.training.optim import build_optimizer, build_scheduler

            cfg = Config()
            cfg.model.backbone, cfg.model.pretrained, cfg.model.weights = backbone, False, None
            model = build_model(cfg.model, CLASSES)
            self.loss_fn = build_loss(cfg.loss, torch.ones(CLASSES)).to(device)
            self.mixup = build_mixup(cfg.augment, CLASSES, cfg.loss.label_smoothing)
            self.opts = StepOptions(accumulation_steps=cfg.optim.accumulation_steps, grad_clip=cfg.optim.grad_clip,
                                    amp_dtype=self.amp_dtype, channels_last=fast)
            self.state, self.progress_cls = LoopState(), EpochProgress
            self.cfg = cfg
        else:
            model = timm.create_model(backbone, pretrained=False, num_classes=CLASSES)
        if fast:
            model = model.to(memory_format=torch.channels_last)
        model.to(device).train()
        self.module = model
        self.model = torch.compile(model) if fast and compile_ else model
        if kind == "emorec":
            self.optimizer = build_optimizer(model, self.cfg)
            self.scheduler = build_scheduler(self.optimizer, self.cfg, 100_000)
        else:
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def run(self, batches, count: int) -> int:
        """Train on `count` micro-batches from `batches`; returns the images seen (synchronised)."""
        import torch

        if self.kind == "emorec":
            from emorec.training.engine import train_one_epoch

            progress = self.progress_cls()
            train_one_epoch(self.model, batches, self.loss_fn, self.optimizer, self.scheduler, self.device,
                            self.opts, self.state, progress, count, mixup=self.mixup, show_progress=False)
            sync(self.device)
            return progress.samples + progress.skipped_images
        seen = 0
        for i, (x, y, _) in enumerate(batches):
            if i >= count:
                break
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                loss = torch.nn.functional.cross_entropy(self.model(x).float(), y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            seen += len(x)
        sync(self.device)
        return seen


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_rate(fn, seconds: float, min_repeats: int = 3) -> dict:
    """Call `fn() -> images` repeatedly for about `seconds` (at least `min_repeats` times)."""
    times, images, start = [], 0, time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        images = fn()
        times.append(time.perf_counter() - t)
    return C.rate(images, times)


def synthetic_phase(backbone: str, batch: int, size: int, budget_s: float, emorec_missing: str | None, device,
                    compile_: bool, steps: int = 10, min_repeats: int = 3) -> dict:
    import torch

    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, CLASSES, (batch,), device=device)
    data = [(x, y, 0)] * steps
    configs = [("reference", False), ("reference", True)] + ([("emorec", True)] if emorec_missing is None else [])
    out, steps_fast = {}, {}
    for kind, fast in configs:
        label = f"{kind} {'bf16+channels_last+compile' if fast else 'fp32 eager'}"
        t = time.perf_counter()
        step = Step(kind, backbone, fast, device, compile_)
        step.run(data, min(4, steps))  # warm-up; compiles under torch.compile
        warm = time.perf_counter() - t
        res = timed_rate(lambda: step.run(data, steps), budget_s / len(configs), min_repeats)
        res["warmup_s"] = warm
        out[label] = res
        C.log(f"{label}: {res['per_s']:.0f} img/s (warm-up/compile {warm:.0f} s)")
        if fast:
            steps_fast[kind] = step
        else:
            del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"batch": batch, "results": out, "_steps": steps_fast}


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def make_jpegs(root: Path, n: int) -> list[Path]:
    """Photo-like 500x375 JPEGs (smooth gradients plus texture), for a run without --data."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    out = []
    for i in range(n):
        base = rng.uniform(0, 255, 3)
        img = base + 60 * np.sin(xx[..., None] / rng.uniform(20, 80) + yy[..., None] / rng.uniform(20, 80) + rng.uniform(0, 6, 3))
        img += rng.normal(0, 12, img.shape)
        path = root / f"c{i % CLASSES}" / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype("uint8")).save(path, quality=90)
        out.append(path)
    return out


class PlainFolder:
    """The reference dataset: torchvision's default loader (ImageFolder's), the same transform."""

    def __init__(self, paths: list[Path], transform):
        from torchvision.datasets.folder import default_loader

        self.paths, self.transform, self.loader = paths, transform, default_loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(self.loader(str(self.paths[i]))), 0


def plain_collate(batch):
    import torch

    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch]), 0


def make_loader(dataset, collate, batch: int, workers: int):
    import torch

    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers, collate_fn=collate,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)


def forever(loader):
    while True:
        yield from loader


LOADERS = ("tensor", "emorec", "reference")  # the first is measured first, should the time run out


def e2e_phase(paths: list[Path], steps: dict, batch: int, size: int, workers: int, budget_s: float,
              emorec_missing: str | None, device, min_repeats: int = 3, names=LOADERS) -> dict:
    """Loader alone, then loader + step, for the `names` loaders: emorec (PIL augmentation in the
    workers), tensor (emorec with augment.backend=tensor) and reference."""
    from emorec.config import Config

    cfg = Config()
    cfg.data.image_size = size
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    out: dict = {"images": len(paths), "workers": workers, "batch": batch}
    if emorec_missing is not None:
        out["emorec_unavailable"] = emorec_missing
        return out
    from emorec.data.dataset import ManifestDataset, collate_skip
    from emorec.data.labels import LabelMap
    from emorec.data.manifest import Sample
    from emorec.data.batch_augment import BatchAugment, build_decode_transform
    from emorec.data.transforms import build_train_transform, eval_resize_size
    from emorec.training.device_augment import augment_ahead

    transform = build_train_transform(cfg, mean, std)
    samples = [Sample(str(p.resolve()), p.parent.name) for p in paths]
    label_map = LabelMap(sorted({s.label for s in samples}))
    datasets = {
        "tensor": (ManifestDataset(samples, label_map, build_decode_transform(cfg), eval_resize_size(size)), collate_skip),
        "emorec": (ManifestDataset(samples, label_map, transform, size), collate_skip),
        "reference": (PlainFolder(paths, transform), plain_collate),
    }
    augment = BatchAugment(cfg, mean, std)
    per_epoch = len(paths) // batch
    per_call = min(per_epoch, 16)  # batches per timed call: several calls fit in a slice of the budget
    slice_s = budget_s / (2 * len(names))
    for name in names:
        loader = make_loader(*datasets[name], batch, workers)
        it = forever(loader)
        if name == "tensor":
            it = augment_ahead(it, lambda x, i: augment(x, seed=i), device)
        for _ in range(min(per_epoch, 2 * workers)):  # start the persistent workers, fill the prefetch queue
            next(it)

        def load_only(n=per_call):
            seen = 0
            for _ in range(n):
                x, _y, _s = next(it)
                x = x.to(device, non_blocking=True)
                seen += len(x)
            sync(device)
            return seen

        out[f"{name} loader only"] = timed_rate(load_only, slice_s, min_repeats)
        step = steps.get("emorec") or steps.get("reference")
        out[f"{name} e2e"] = timed_rate(lambda: step.run(it, per_call), slice_s, min_repeats)
        C.log(f"{name}: loader {out[f'{name} loader only']['per_s']:.0f} img/s, "
              f"e2e {out[f'{name} e2e']['per_s']:.0f} img/s")
        del it, loader  # stops its persistent workers before the next loader starts its own
    return out


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--data", type=Path, help="folder of JPEGs (searched recursively); default: generated ones")
    p.add_argument("--minutes", type=float, default=None,
                   help="time budget for the measurements (default 1.5 quick, 6); compiling adds about 1 min per "
                        "compiled model on an H100 machine with 16 cores")
    p.add_argument("--backbone", default="resnet50", help="timm backbone (default: resnet50)")
    p.add_argument("--batch", type=int, default=256, help="micro-batch size (default: 256)")
    p.add_argument("--workers", type=int, default=16, help="DataLoader workers for the end-to-end run (default: 16)")
    p.add_argument("--size", type=int, default=SIZE, help=f"input size in px (default: {SIZE})")
    p.add_argument("--loaders", default=",".join(LOADERS),
                   help="end-to-end loaders to measure, in order, comma-separated from tensor (augment.backend=tensor), "
                        "emorec (PIL augmentation in the workers), reference (default: all three)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run every code path on the CPU at toy sizes, no compile (for tests; the numbers mean nothing)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.cpu_smoke:
        device = torch.device("cpu")
        args.backbone, args.batch, args.workers, args.size = "test_resnet", 8, 2, 64
        args.minutes = args.minutes or 0.05
    elif not torch.cuda.is_available():
        print(f"{NAME}: skipped, no CUDA device (torch {torch.__version__}); run on a GPU machine")
        return 0
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        # The fp32 reference gets TF32 matmuls/convolutions, as PyTorch users on Ampere+ usually enable.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    loaders = [n.strip() for n in args.loaders.split(",") if n.strip()]
    if not loaders or set(loaders) - set(LOADERS):
        print(f"{NAME}: --loaders {args.loaders!r}: choose from {', '.join(LOADERS)}")
        return 2
    minutes = args.minutes or (1.5 if args.quick else 6.0)
    budget = minutes * 60

    missing = None
    for name in ("emorec.models", "emorec.training.losses", "emorec.training.mixing", "emorec.training.optim",
                 "emorec.data.dataset", "emorec.data.transforms", "emorec.data.batch_augment"):
        mod, why = C.optional_import(name)
        if mod is None:
            missing = why
            break

    tmp = None
    try:
        if args.data is not None:
            if not args.data.is_dir():
                print(f"{NAME}: --data {args.data} is not a folder; pass a folder of JPEGs")
                return 2
            paths, data_src = image_files(args.data), f"{args.data} (given)"
        else:
            tmp = Path(tempfile.mkdtemp(prefix="emorec_bench_gpu_"))
            count = 16 if args.cpu_smoke else 1024 if args.quick else 2048
            paths, data_src = make_jpegs(tmp, count), "generated 500x375 JPEGs"
        if len(paths) < (1 if args.cpu_smoke else 2) * args.batch:
            print(f"{NAME}: --data has {len(paths)} images; at least {2 * args.batch} are needed for batch {args.batch}")
            return 2
        # A small folder is repeated so one loader epoch holds enough batches: otherwise each epoch
        # boundary drains the workers' prefetch queue, which a real-sized dataset would not do.
        target = (2 if args.cpu_smoke else 64) * args.batch
        if len(paths) < target:
            reps = math.ceil(target / len(paths))
            data_src += f", each file listed {reps} times so an epoch has >= {target // args.batch} batches"
            paths = paths * reps
        C.log(f"data: {len(paths)} images, {data_src}")
        smoke = {"min_repeats": 1} if args.cpu_smoke else {}
        syn = synthetic_phase(args.backbone, args.batch, args.size, budget * 0.5, missing, device, not args.cpu_smoke,
                              steps=2 if args.cpu_smoke else 10, **smoke)
        steps = syn.pop("_steps")
        e2e = e2e_phase(paths, steps, args.batch, args.size, args.workers, budget * 0.5, missing, device,
                        names=loaders, **smoke)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    res = syn["results"]
    rows = [[k, r["per_s"]] for k, r in res.items()]
    rows += [[k, r["per_s"]] for k, r in e2e.items() if isinstance(r, dict)]
    print(C.table(rows, ["images/s", "value"]))
    emo = res.get("emorec bf16+channels_last+compile", {}).get("per_s")
    ref = res["reference fp32 eager"]["per_s"]
    where = "CPU smoke run: numbers mean nothing" if args.cpu_smoke else f"GPU {torch.cuda.get_device_name(0)}"
    notes = [f"{args.backbone} at {args.size} px, micro-batch {args.batch}, {where}",
             f"data: {len(paths)} images, {data_src}"]
    if missing:
        notes.append(f"emorec not measured: {missing}")
    fastest = emo or res["reference bf16+channels_last+compile"]["per_s"]
    if "emorec e2e" in e2e:
        e2e_rate, loader_rate = e2e["emorec e2e"]["per_s"], e2e["emorec loader only"]["per_s"]
        bound = e2e_rate < 0.9 * fastest
        e2e["loader_bound"] = bound
        notes.append(f"end to end {e2e_rate:.0f} img/s with {args.workers} workers vs {fastest:.0f} synthetic, loader "
                     f"alone {loader_rate:.0f}: {'loader-bound' if bound else 'not loader-bound'}")
    if "tensor e2e" in e2e:
        rate = e2e["tensor e2e"]["per_s"]
        e2e["tensor_vs_synthetic"] = rate / fastest
        e2e["tensor_targets_met"] = rate >= 0.8 * fastest and rate >= 3500
        notes.append(f"augment.backend=tensor: end to end {rate:.0f} img/s = {rate / fastest:.2f}x the synthetic step "
                     f"(targets >= 0.8x and >= 3,500 img/s: {'met' if e2e['tensor_targets_met'] else 'not met'}), "
                     f"loader + augmentation on the device alone {e2e['tensor loader only']['per_s']:.0f}")
    C.finish(NAME, args, emo, ref, "images/s",
             {"backbone": args.backbone, "image_size": args.size, "synthetic": syn, "end_to_end": e2e,
              "cpu_smoke": args.cpu_smoke,
              "budget_minutes": minutes, "headline": "synthetic: emorec full step bf16+channels_last+compile vs "
                                                     "bare fp32 eager loop"},
             device=str(device), notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
