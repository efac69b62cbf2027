"""The images a user points a command at: gathered from files, folders and CSV manifests, and
each one decoded or reported as a `Failure`.

Prediction, face prediction, explanations, feature extraction and face-crop evaluation all skip
an unreadable image and go on: one bad file must not cost the results of the others. `Failure`
is the report of such a file and `load_or_failure` the one place that decides what unreadable
means, so every command skips the same files for the same reasons.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from emorec.data import imageio
from emorec.data.manifest import IMAGE_EXTENSIONS

# Video files `emorec predict` reads frame by frame (emorec.video.frames).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS
from emorec.errors import EmorecError


@dataclass
class Failure:
    """An input that gave no result, and why (printed as `skipped PATH: REASON`)."""

    path: str
    reason: str


def _csv_paths(csv_path: Path) -> list[Path]:
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise EmorecError(f"CSV input {csv_path} has no 'path' column (found {reader.fieldnames}); add a header row with 'path'")
        paths = []
        for row in reader:
            p = Path(row["path"])
            paths.append(p if p.is_absolute() else csv_path.parent / p)
    return paths


def read_input_list(list_file: str | Path) -> list[Path]:
    """The images a list file names: a CSV with a 'path' column, or text with one path per line
    (blank lines and lines starting with # are skipped); relative paths are relative to the list's
    folder. Entries are taken as image files, not looked at: a job over millions of images reads
    one file instead of walking a tree on every rank, and a missing image is skipped when it is
    decoded, like any other unreadable one."""
    path = Path(list_file)
    fix = "pass a text file with one image path per line, or a CSV with a 'path' column"
    if not path.is_file():
        raise EmorecError(f"input list {path} not found; {fix}")
    if path.suffix.lower() == ".csv":
        return _csv_paths(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise EmorecError(f"input list {path} is not UTF-8 text; {fix}") from None
    entries = [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [p if p.is_absolute() else path.parent / p for p in entries]


def collect_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Expand files, folders (recursive, image extensions) and CSV manifests into image paths.

    Paths that do not exist are returned as failures so they are reported with the unreadable ones.
    """
    paths: list[Path] = []
    failures: list[Failure] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.is_file() and (f.suffix.lower() in IMAGE_EXTENSIONS or is_video(f)))
        elif p.is_file() and p.suffix.lower() == ".csv":
            paths += _csv_paths(p)
        elif p.is_file():
            paths.append(p)
        else:
            failures.append(Failure(str(p), "no such file or folder"))
    return paths, failures


def load_or_failure(path: str | Path, min_size: int | None = None) -> Image.Image | Failure:
    """`imageio.load_rgb(path, min_size)`: the RGB image, or a `Failure` saying why it is unreadable."""
    try:
        # looked up on the module at each call, so a spy set on imageio.load_rgb sees these decodes too
        return imageio.load_rgb(path, min_size=min_size)
    except imageio.ImageLoadError as e:
        # Only ImageLoadError: load_rgb already turns every way a file can be unreadable (missing,
        # empty, truncated, not an image, a decompression bomb, a corrupt EXIF block) into it, so
        # anything else is a bug in emorec and must stop the run, not pass as one bad file.
        return Failure(str(path), e.reason)
