"""`emorec data cache`: a pre-resized JPEG copy of a dataset, so epochs stop re-decoding big photos.

Each image is decoded once (draft mode, EXIF orientation, any mode to RGB: `load_rgb`), shrunk so
its shorter side is `size` px, and saved as JPEG at `quality`. An image already no larger than
`size` is copied byte for byte when it is a JPEG that needs no rotation, else re-encoded. The
copy's `manifest.csv` (`path,label,split,source`, paths relative to the cache) keeps the original
labels and splits and is an ordinary CSV manifest for every command. Re-running skips copies that
are newer than their source, so only new or changed images are processed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

from PIL import Image

from emorec.data.imageio import ImageLoadError, load_rgb
from emorec.data.labels import LabelMap
from emorec.data.manifest import Manifest, Sample
from emorec.data.parallel import map_with_progress
from emorec.errors import EmorecError

MANIFEST_NAME = "manifest.csv"
INFO_NAME = "cache.json"


def _destinations(samples: list[Sample], images_dir: Path) -> list[Path]:
    """images/<path relative to the sources' common folder>.jpg, de-duplicated when two sources
    differ only by extension (a.png and a.jpg)."""
    common = Path(os.path.commonpath([os.path.dirname(s.path) for s in samples])) if samples else Path("/")
    taken: set[str] = set()
    out = []
    for s in samples:
        rel = Path(s.path).relative_to(common).with_suffix("")
        candidate, n = rel.as_posix(), 1
        while candidate in taken:
            candidate, n = f"{rel.as_posix()}-{n}", n + 1
        taken.add(candidate)
        out.append(images_dir / f"{candidate}.jpg")
    return out


def _needs_no_change(path: str, size: int) -> bool:
    """A small JPEG already RGB or greyscale and upright: the copy can be the file itself."""
    with Image.open(path) as image:
        if image.format != "JPEG" or min(image.size) > size or image.mode not in ("RGB", "L"):
            return False
        if image.getexif().get(0x0112, 1) != 1:
            return False
        image.load()  # a truncated file must fail here, not be copied into the cache
        return True


def resize_one(job: tuple[str, str, int, int]) -> tuple[str, str]:
    """(status, detail) for one copy: status is written, copied, kept or failed."""
    src, dst, size, quality = job
    target = Path(dst)
    try:
        if target.is_file() and target.stat().st_mtime >= os.path.getmtime(src):
            return "kept", ""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        if _needs_no_change(src, size):
            shutil.copyfile(src, tmp)
            status = "copied"
        else:
            image = load_rgb(src, min_size=size)
            w, h = image.size
            if min(w, h) > size:
                scale = size / min(w, h)
                # reducing_gap: a fast box pre-shrink, then a correct bicubic filter on the rest.
                image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC,
                                     reducing_gap=3.0)
            image.save(tmp, "JPEG", quality=quality)
            status = "written"
        os.replace(tmp, target)  # a half-written copy is never mistaken for a finished one
        return status, ""
    except ImageLoadError as e:
        return "failed", e.reason
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a long caching run
        return "failed", f"{type(e).__name__}: {e}"


def cache_dataset(manifest: Manifest, output: str | Path, size: int = 256, quality: int = 90, workers: int = 2,
                  progress: bool = True) -> dict:
    """Write the resized copy and its manifest to `output`; returns counts and the manifest path."""
    if size < 16:
        raise EmorecError(f"cache size {size} is too small; pass --size 16 or more (e.g. 256 for 224 px training)")
    if not 1 <= quality <= 100:
        raise EmorecError(f"JPEG quality {quality} is out of range; pass --quality between 1 and 100 (default 90)")
    output = Path(output)
    sources = {str(Path(s.path).parent.resolve()) for s in manifest.samples}
    if any(Path(src) == output.resolve() or output.resolve() in Path(src).parents for src in sources):
        raise EmorecError(f"cache folder {output} holds the source images; pass a separate --output folder")
    samples = manifest.samples
    destinations = _destinations(samples, output / "images")
    jobs = [(s.path, str(d), size, quality) for s, d in zip(samples, destinations)]
    results = map_with_progress(resize_one, jobs, workers, "caching images", progress)
    kept = [(s, d) for (s, d), (status, _) in zip(zip(samples, destinations), results) if status != "failed"]
    failed = [(s.path, detail) for s, (status, detail) in zip(samples, results) if status == "failed"]
    if not kept:
        raise EmorecError(f"no image of {manifest.source} could be cached (first error: {failed[0][1]}); "
                          "run `emorec data check` on it")
    manifest_path = output / MANIFEST_NAME
    with manifest_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split", "source"])
        for s, d in kept:
            writer.writerow([d.relative_to(output).as_posix(), s.label, s.split or "", s.path])
    LabelMap.from_manifest(manifest).save(output / "label_map.json")
    counts = {k: sum(1 for status, _ in results if status == k) for k in ("written", "copied", "kept", "failed")}
    stats = {"source": manifest.source, "output": str(output), "manifest": str(manifest_path), "size": size,
             "quality": quality, "images": len(kept), **counts, "failed_paths": [p for p, _ in failed[:20]]}
    (output / INFO_NAME).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def use_cache(manifest: Manifest, cache_dir: str | Path) -> Manifest:
    """`manifest` with each image replaced by its cached copy (matched by original path); an image
    the cache lacks is an error, so a stale cache is never half-used silently."""
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST_NAME
    if not path.is_file():
        raise EmorecError(f"no {MANIFEST_NAME} in cache folder {cache_dir}; create it with "
                          f"`emorec data cache SOURCE --output {cache_dir}` or unset data.cache_dir")
    with path.open(newline="") as f:
        cached = {row["source"]: str((cache_dir / row["path"]).resolve()) for row in csv.DictReader(f)}
    missing = [s.path for s in manifest.samples if s.path not in cached]
    if missing:
        raise EmorecError(f"{len(missing)} images of {manifest.source} are not in the cache {cache_dir} (first: "
                          f"{missing[0]}); re-run `emorec data cache` on the dataset or unset data.cache_dir")
    return Manifest([Sample(cached[s.path], s.label, s.split) for s in manifest.samples], manifest.source)
