"""Data loading speed: decode + resize + the 224 px training augmentation, in images/s.

emorec     `ManifestDataset` over `read_manifest` (Pillow draft-mode JPEG decoding straight to
           >= 224 px through `load_rgb`), `collate_skip`.
reference  torchvision `ImageFolder` with its default PIL loader (full-size decode, then convert).
Both use the same transform object: emorec's `build_train_transform` of the default recipe
(falling back to an equivalent torchvision pipeline, stated in the output, while that is missing),
the same DataLoader batch size, and 1 and 2 worker processes; passes alternate between the two
sides and the median of the repeats is reported.

Image sets (all real JPEGs):
  emotion6  Emotion6 photos as they are (shorter side <= 256 px)
  large     Emotion6 photos upscaled to 1600-4000 px on the long side, written at run time into a
            temporary folder (never into the repository or ../shared); decode cost dominates
  fer2013   FER-2013 48 px grayscale faces, where per-file overhead dominates
Pre-resized cache: the large set is cached at 256 px by `emorec data cache` and the emorec loader
is timed on the cache too, alternating with the other passes (what every epoch after the one-off
caching sees).

Augmentation row (issue 17): the same Emotion6 photos through both `augment.backend`s, as
training runs them on this machine, alternating (ABBA): `pil` (reference column) decodes and
augments per image in 2 workers; `tensor` (emorec column) decodes and resizes in 2 workers and
runs `BatchAugment` on the batches in the main process (on the CPU here, on the GPU in a GPU
run), with torch threads = the cores left beside the workers, as `emorec train` sets them. Both
yield normalised float batches of 224 px, batch 32.

Target (issue 8): at least 2x on large JPEGs, no slower on small ones.

    python benchmarks/bench_loader.py --quick     # under 2 minutes on 2 cores
    python benchmarks/bench_loader.py             # more images and repeats
    python benchmarks/bench_loader.py --augment-only --images 256 --repeats 4   # just the augmentation row
Last line: `loader: emorec X vs reference Y images/s ratio=R` (large JPEGs, 2 workers), or with
--augment-only `loader_augment: emorec X vs reference Y images/s ratio=R` (tensor vs pil).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "loader"
IMAGE_SIZE = 224
BATCH = 32
LARGE_SIDES = (1600, 2400, 3200, 4000)  # long side of the upscaled photos, cycled
CACHE_SIZE = 256


def pick(paths: list[Path], n: int) -> list[Path]:
    """`n` paths spread evenly over the sorted list, so every class folder is represented."""
    paths = sorted(paths)
    if n >= len(paths):
        return paths
    step = len(paths) / n
    return [paths[int(i * step)] for i in range(n)]


def make_large(sources: list[Path], root: Path) -> list[Path]:
    """Upscale photos to 1600-4000 px (long side) as q90 JPEGs in an ImageFolder layout under `root`."""
    from PIL import Image

    out = []
    for i, src in enumerate(sources):
        side = LARGE_SIDES[i % len(LARGE_SIDES)]
        with Image.open(src) as im:
            im = im.convert("RGB")
            scale = side / max(im.size)
            big = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        dst = root / src.parent.name / f"{src.stem}_{side}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        big.save(dst, quality=90)
        out.append(dst)
    return out


def recipe_transform():
    """emorec's training transform of the default recipe, or an equivalent one while it is missing."""
    from emorec.config import Config

    cfg = Config()
    cfg.data.image_size = IMAGE_SIZE
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    mod, why = C.optional_import("emorec.data.transforms")
    if mod is not None:
        return mod.build_train_transform(cfg, mean, std), "emorec.data.transforms.build_train_transform (recipe)"
    from torchvision import transforms as T

    a = cfg.augment
    jitter = a.color_jitter
    return T.Compose([
        T.RandomResizedCrop(IMAGE_SIZE, scale=(a.scale_min, 1.0)),
        T.RandomHorizontalFlip(a.hflip),
        T.RandomRotation(a.rotation),
        T.ColorJitter(jitter, jitter, jitter, jitter / 10),
        T.RandomPerspective(a.perspective, p=a.perspective_p),
        T.AutoAugment(),
        T.ToTensor(),
        T.Normalize(mean, std),
        T.RandomErasing(a.random_erasing),
    ]), f"torchvision equivalent of the recipe ({why})"


def reference_dataset(root: Path, paths: list[Path], transform):
    """ImageFolder over `root` (default PIL loader), restricted to `paths`."""
    from torch.utils.data import Subset
    from torchvision.datasets import ImageFolder

    full = ImageFolder(str(root), transform=transform)
    wanted = {str(p.resolve()) for p in paths}
    idx = [i for i, (p, _) in enumerate(full.samples) if str(Path(p).resolve()) in wanted]
    return Subset(full, idx)


def emorec_dataset(root: Path, paths: list[Path], transform):
    """emorec's ManifestDataset over `root`, restricted to `paths`; (dataset, None) or (None, reason)."""
    for name in ("emorec.data.manifest", "emorec.data.labels", "emorec.data.dataset"):
        mod, why = C.optional_import(name)
        if mod is None:
            return None, why
    from emorec.data.dataset import ManifestDataset
    from emorec.data.labels import LabelMap
    from emorec.data.manifest import read_manifest

    manifest = read_manifest(str(root))
    wanted = {str(p.resolve()) for p in paths}
    samples = [s for s in manifest.samples if str(Path(s.path).resolve()) in wanted]
    return ManifestDataset(samples, LabelMap.from_manifest(manifest), transform, IMAGE_SIZE), None


def batch_size(n: int) -> int:
    """At most BATCH, and small enough for >= 8 batches, so that 2 workers both have work."""
    return max(1, min(BATCH, n // 8))


def one_pass(dataset, workers: int, emorec: bool) -> int:
    """Iterate the whole dataset once through a DataLoader; returns the number of images seen."""
    from torch.utils.data import DataLoader

    kwargs = {}
    if emorec:
        from emorec.data.dataset import collate_skip

        kwargs["collate_fn"] = collate_skip
    loader = DataLoader(dataset, batch_size=batch_size(len(dataset)), num_workers=workers, shuffle=False, **kwargs)
    seen = 0
    for batch in loader:
        seen += len(batch[0])
    return seen


def measure(name: str, root: Path, paths: list[Path], transform, workers_list, repeats: int, cached=None) -> dict:
    """Alternate reference, emorec (and emorec-on-cache) passes, so load from other users hits
    every side alike; medians per worker count."""
    import time

    ref = reference_dataset(root, paths, transform)
    emo, why = emorec_dataset(root, paths, transform)
    out = {"images": len(paths), "root": "temporary folder" if name == "large" else str(root), "workers": {}}
    if emo is None:
        out["emorec_unavailable"] = why
    for w in workers_list:
        times = {"reference": [], "emorec": [], "emorec_cached": []}
        for r in range(repeats):
            order = [("reference", ref), ("emorec", emo), ("emorec_cached", cached)]
            for side, ds in order[::-1] if r % 2 else order:  # ABBA: neither side always goes first
                if ds is None:
                    continue
                t = time.perf_counter()
                seen = one_pass(ds, w, side != "reference")
                times[side].append(time.perf_counter() - t)
                if seen != len(paths):
                    raise RuntimeError(f"{side} loader yielded {seen} of {len(paths)} images on {name}")
        row = {"reference": C.rate(len(paths), times["reference"])}
        if times["emorec"]:
            row["emorec"] = C.rate(len(paths), times["emorec"])
            row["ratio"] = row["emorec"]["per_s"] / row["reference"]["per_s"]
        if times["emorec_cached"]:
            row["emorec_cached"] = C.rate(len(paths), times["emorec_cached"])
            row["cached_ratio"] = row["emorec_cached"]["per_s"] / row["reference"]["per_s"]
            C.log(f"{name:9s} workers={w}: emorec on the {CACHE_SIZE} px cache {row['emorec_cached']['per_s']:.1f} img/s")
        out["workers"][str(w)] = row
        C.log(f"{name:9s} workers={w}: reference {row['reference']['per_s']:.1f} img/s"
              + (f", emorec {row['emorec']['per_s']:.1f} img/s, ratio {row['ratio']:.2f}" if "emorec" in row else
                 f", emorec unavailable"))
    return out


def augment_row(paths: list[Path], workers: int, repeats: int) -> dict:
    """images/s of the `pil` and `tensor` augmentation backends on the same photos, alternating."""
    import os
    import time

    import torch
    from torch.utils.data import DataLoader

    from emorec.config import Config
    from emorec.data.batch_augment import BatchAugment, build_decode_transform
    from emorec.data.dataset import ManifestDataset, collate_skip
    from emorec.data.labels import LabelMap
    from emorec.data.manifest import Sample
    from emorec.data.transforms import build_train_transform, eval_resize_size

    cfg = Config()
    cfg.data.image_size = IMAGE_SIZE
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    samples = [Sample(str(p.resolve()), p.parent.name) for p in paths]
    labels = LabelMap(sorted({s.label for s in samples}))
    pil = ManifestDataset(samples, labels, build_train_transform(cfg, mean, std), IMAGE_SIZE)
    tensor = ManifestDataset(samples, labels, build_decode_transform(cfg), eval_resize_size(IMAGE_SIZE))
    augment = BatchAugment(cfg, mean, std)
    threads = max(1, C.usable_cores() - workers)  # what emorec train gives the main process on CPU

    def one(dataset, batched: bool) -> int:
        loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=collate_skip)
        seen, before = 0, torch.get_num_threads()
        torch.set_num_threads(threads if batched else before)
        try:
            for i, (x, _y, _s) in enumerate(loader):
                if batched:
                    x = augment(x, seed=i)
                assert x.dtype == torch.float32 and x.shape[-1] == IMAGE_SIZE
                seen += len(x)
        finally:
            torch.set_num_threads(before)
        return seen

    times: dict[str, list[float]] = {"pil": [], "tensor": []}
    order = [("pil", pil, False), ("tensor", tensor, True)]
    for r in range(repeats):
        for side, ds, batched in order[::-1] if r % 2 else order:  # ABBA
            t = time.perf_counter()
            seen = one(ds, batched)
            times[side].append(time.perf_counter() - t)
            if seen != len(paths):
                raise RuntimeError(f"{side} backend yielded {seen} of {len(paths)} images")
    row = {"images": len(paths), "workers": workers, "batch": BATCH, "tensor_threads": threads,
           "pil": C.rate(len(paths), times["pil"]), "tensor": C.rate(len(paths), times["tensor"])}
    row["ratio"] = row["tensor"]["per_s"] / row["pil"]["per_s"]
    row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    C.log(f"augment   workers={workers}: pil {row['pil']['per_s']:.1f} img/s, tensor {row['tensor']['per_s']:.1f} img/s "
          f"(batched on the CPU, {threads} thread), ratio {row['ratio']:.2f}")
    return row


def build_cache(large_root: Path, tmp: Path, transform) -> tuple[object | None, dict]:
    """Run `emorec data cache` on the large set; (emorec dataset over the cache, info) or (None, reason)."""
    import time

    mod, why = C.optional_import("emorec.data.cache")
    if mod is None:
        return None, {"available": False, "reason": why}
    out_dir = tmp / "cache"
    cmd = [sys.executable, "-m", "emorec", "data", "cache", str(large_root), "--size", str(CACHE_SIZE),
           "--output", str(out_dir), "--no-progress"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    build_s = time.perf_counter() - t
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, {"available": False, "reason": f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}): {tail[0]}"}
    from emorec.data.dataset import ManifestDataset
    from emorec.data.labels import LabelMap
    from emorec.data.manifest import read_manifest

    manifest = read_manifest(str(out_dir / "manifest.csv"))
    ds = ManifestDataset(manifest.samples, LabelMap.from_manifest(manifest), transform, IMAGE_SIZE)
    C.log(f"cache: {len(manifest.samples)} images at {CACHE_SIZE} px written in {build_s:.1f} s (process start included)")
    return ds, {"available": True, "command": f"emorec data cache LARGE --size {CACHE_SIZE} --output DIR",
                "build_s_including_process_start": build_s, "images": len(manifest.samples)}


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--augment-only", action="store_true",
                   help="measure only the augmentation row (pil vs tensor backend); writes loader_augment.json")
    p.add_argument("--images", type=int, default=None, help="Emotion6 photos for the augmentation row (default 64 quick, 256)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    n_e6, n_large, n_fer = (96, 24, 256) if quick else (384, 64, 2048)
    workers_list = (1, 2)

    e6 = C.shared_dataset("emotion6")
    fer = C.shared_dataset("fer2013")
    if e6 is None or fer is None:
        print(f"{NAME}: skipped, ../shared/datasets/emotion6 and fer2013 are needed (not found under {C.SHARED})")
        return 0
    n_aug = args.images or (64 if quick else 256)
    if args.augment_only:
        row = augment_row(pick(list((e6 / "images").glob("*/*.jpg")), n_aug), 2, repeats)
        C.finish("loader_augment", args, row["tensor"]["per_s"], row["pil"]["per_s"], "images/s",
                 {"image_size": IMAGE_SIZE, "augment": row},
                 notes=["reference = augment.backend=pil (2 workers); emorec = augment.backend=tensor (2 workers decode, "
                        f"BatchAugment on the CPU in the main process with {row['tensor_threads']} thread)"])
        return 0
    transform, transform_src = recipe_transform()
    C.log(f"transform: {transform_src}")

    tmp = Path(tempfile.mkdtemp(prefix="emorec_bench_loader_"))
    try:
        e6_root, fer_root = e6 / "images", fer / "images"
        e6_paths = pick(list(e6_root.glob("*/*.jpg")), n_e6)
        fer_paths = pick(list(fer_root.glob("*/*.jpg")), n_fer)
        large_root = tmp / "large"
        large_paths = make_large(pick(list(e6_root.glob("*/*.jpg")), n_large), large_root)
        cached, cache = build_cache(large_root, tmp, transform)
        sets = {}
        for name, root, paths in (("large", large_root, large_paths), ("emotion6", e6_root, e6_paths),
                                  ("fer2013", fer_root, fer_paths)):
            sets[name] = measure(name, root, paths, transform, workers_list, repeats,
                                 cached if name == "large" else None)
        augment = augment_row(pick(list(e6_root.glob("*/*.jpg")), n_aug), 2, repeats)
        if cache.get("available"):
            row = sets["large"]["workers"]["2"]
            cache["emorec_cached_per_s"] = row["emorec_cached"]["per_s"]
            cache["ratio_vs_reference_on_originals"] = row["cached_ratio"]
            if "emorec" in row:
                cache["ratio_vs_emorec_on_originals"] = row["emorec_cached"]["per_s"] / row["emorec"]["per_s"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for name, s in sets.items():
        for w, row in s["workers"].items():
            rows.append([f"{name} ({s['images']} img)", w, row["reference"]["per_s"],
                         row.get("emorec", {}).get("per_s"), row.get("ratio")])
            if "emorec_cached" in row:
                rows.append([f"{name} via {CACHE_SIZE} px cache", w, row["reference"]["per_s"],
                             row["emorec_cached"]["per_s"], row["cached_ratio"]])
    rows.append([f"augment: tensor vs pil ({augment['images']} Emotion6 img)", augment["workers"],
                 augment["pil"]["per_s"], augment["tensor"]["per_s"], augment["ratio"]])
    print(C.table(rows, ["images/s", "workers", "reference", "emorec", "ratio"]))
    notes = [f"transform on both sides: {transform_src}",
             "augment row: reference = augment.backend=pil, emorec = augment.backend=tensor (batched on the CPU, "
             f"{augment['tensor_threads']} thread beside the workers)"]
    for name, s in sets.items():
        if "emorec_unavailable" in s:
            notes.append(f"{name}: emorec side not measured: {s['emorec_unavailable']}")
    notes.append("cache: " + (f"{cache['emorec_cached_per_s']:.1f} img/s on the {CACHE_SIZE} px cache, 2 workers "
                              f"(x{cache['ratio_vs_reference_on_originals']:.2f} the reference on the originals)"
                              if cache.get("available") else f"not measured: {cache['reason']}"))
    head = sets["large"]["workers"]["2"]
    C.finish(NAME, args, head.get("emorec", {}).get("per_s"), head["reference"]["per_s"], "images/s",
             {"image_size": IMAGE_SIZE, "batch_size": f"min({BATCH}, images // 8)", "repeats": repeats, "transform": transform_src,
              "headline": "large JPEGs (1600-4000 px), 2 workers", "sets": sets, "cache": cache,
              "augment": augment},
             notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
