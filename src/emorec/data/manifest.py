"""A dataset as a manifest: one row per image with an absolute path, a label and an optional split.

Three layouts are read into the same `Manifest`:
- an ImageFolder tree, `root/<label>/*.jpg` or `root/<split>/<label>/*.jpg`;
- a CSV with columns `path,label[,split]`, paths relative to the CSV's folder or `images_root`;
- a flat folder of `<label>_<anything>.jpg` files (the FI and ArtPhoto layout).
A folder holding `labels.csv` or `manifest.csv` beside its images is read through that CSV, so
the shared datasets can be named by their folder.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from emorec.errors import EmorecError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
CSV_NAMES = ("labels.csv", "manifest.csv")  # looked for inside a folder given as the source


@dataclass
class Sample:
    path: str  # absolute
    label: str
    split: str | None = None


@dataclass
class Manifest:
    samples: list[Sample]
    source: str

    def labels(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted({s.label for s in self.samples})

    def splits(self) -> set:
        """Distinct split names; None is in the set when some samples have no split."""
        return {s.split for s in self.samples}

    @property
    def has_splits(self) -> bool:
        return bool(self.samples) and all(s.split for s in self.samples)

    def subset(self, split: str | None) -> "Manifest":
        return Manifest([s for s in self.samples if s.split == split], self.source)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(s.label for s in self.samples)
        return {label: counts[label] for label in sorted(counts)}

    def to_csv(self, path: str | Path, relative: bool = False) -> Path:
        """Write `path,label,split`; `relative` writes paths relative to the CSV's folder where possible."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        base = path.resolve().parent
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "split"])
            for s in self.samples:
                p = s.path
                if relative:
                    try:
                        p = Path(p).relative_to(base).as_posix()
                    except ValueError:
                        pass
                writer.writerow([p, s.label, s.split or ""])
        return path

    def content_hash(self) -> str:
        """sha256 of the sorted (path, label, split) rows: equal for the same dataset and splits."""
        digest = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: (s.path, s.label, s.split or "")):
            digest.update(f"{s.path}\t{s.label}\t{s.split or ''}\n".encode())
        return digest.hexdigest()


def normalize_split(name: str | None, where: str) -> str | None:
    """'valid' -> 'val', '' -> None; an unknown name is an error naming `where`."""
    if name is None or not str(name).strip():
        return None
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise EmorecError(f"unknown split '{name}' in {where}; use train, val or test (aliases: valid, validation)")
    return SPLIT_ALIASES[key]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _layout_help() -> str:
    return ("expected root/<label>/*.jpg, root/<split>/<label>/*.jpg, <label>_*.jpg files or a CSV with "
            "path,label[,split] columns")


def _read_class_folders(root: Path, split: str | None) -> list[Sample]:
    samples = []
    for folder in _subdirs(root):
        files = _image_files(folder)
        if not files:
            raise EmorecError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                              "add images to it or remove the folder")
        samples += [Sample(str(p.resolve()), folder.name, split) for p in files]
    return samples


def _read_folder(root: Path) -> list[Sample]:
    subdirs = _subdirs(root)
    top_files = _image_files(root)
    if not subdirs:
        if not top_files:
            raise EmorecError(f"no images found in {root}; {_layout_help()}")
        return _read_flat(root, top_files)
    # A folder whose sub-folders hold only folders is the split layout root/<split>/<label>/.
    nested = [d for d in subdirs if _subdirs(d) and not _image_files(d)]
    if nested and len(nested) == len(subdirs):
        samples = []
        for d in subdirs:
            split = normalize_split(d.name, f"folder {d}")
            samples += _read_class_folders(d, split)
        return samples
    if nested:
        raise EmorecError(f"{root} mixes split folders ({nested[0].name}/) with class folders; put every class "
                          "folder under train/, val/ or test/, or none of them")
    return _read_class_folders(root, None)


def _read_flat(root: Path, files: list[Path]) -> list[Sample]:
    samples = []
    for p in files:
        label, sep, _ = p.stem.partition("_")
        if not sep or not label:
            raise EmorecError(f"cannot read a label from file name {p}; name flat-folder files <label>_<anything>"
                              f"{p.suffix} or use class sub-folders")
        samples.append(Sample(str(p.resolve()), label))
    return samples


def _read_csv(path: Path, images_root: str | None) -> list[Sample]:
    base = Path(images_root) if images_root else path.parent
    if images_root and not base.is_dir():
        raise EmorecError(f"images root not found: {images_root}; pass the folder the CSV's paths are relative to")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise EmorecError(f"CSV manifest {path} has no {' or '.join(missing)} column (found: "
                              f"{', '.join(columns) or 'nothing'}); its header must be path,label[,split]")
        reader.fieldnames = columns
        samples = []
        for line, row in enumerate(reader, start=2):
            rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not rel or not label:
                raise EmorecError(f"{path} line {line}: empty path or label; fill both or delete the row")
            split = normalize_split(row.get("split"), f"{path} line {line}")
            p = Path(rel)
            full = p if p.is_absolute() else base / p
            samples.append(Sample(os.path.abspath(full), label, split))
    if not samples:
        raise EmorecError(f"CSV manifest {path} has no rows; add path,label rows below the header")
    return samples


def read_manifest(source: str | Path, images_root: str | Path | None = None) -> Manifest:
    """Read a folder (ImageFolder, split ImageFolder, flat `<label>_*.jpg`) or a CSV manifest.

    Folder samples come sorted by (split folder, label, file name); CSV rows keep their order. Every
    listed file must exist (`check_files_exist`), so a bad manifest fails at start-up.
    """
    root = Path(source).expanduser()
    if not root.exists():
        raise EmorecError(f"dataset not found: {source}; pass an existing folder or CSV manifest")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise EmorecError(f"{source} is not a CSV manifest or a folder; pass a folder of images or a .csv with "
                              "path,label[,split] columns")
        samples = _read_csv(root, str(images_root) if images_root else None)
    else:
        csv_path = next((root / n for n in CSV_NAMES if (root / n).is_file()), None)
        if csv_path is not None and not _image_files(root):
            samples = _read_csv(csv_path, str(images_root) if images_root else None)
        else:
            samples = _read_folder(root)
    manifest = Manifest(samples, str(source))
    check_files_exist(manifest)
    return manifest


def check_files_exist(manifest: Manifest, show: int = 5) -> None:
    """Raise listing the first `show` missing files and how many are missing."""
    missing = [s.path for s in manifest.samples if not os.path.isfile(s.path)]
    if missing:
        first = ", ".join(missing[:show]) + (", ..." if len(missing) > show else "")
        raise EmorecError(f"{len(missing)} of {len(manifest.samples)} images listed in {manifest.source} are missing "
                          f"({first}); fix the paths or pass --images-root with the folder they are relative to")
