"""Run checkpoints: atomic writes, which file a path means, corruption fallback, compatibility.

Training writes checkpoints; features, evaluation and serving read them. The module sits below
all of them (it needs only torch and, for the compatibility check, `emorec.models`), so none of
them imports another to reach it.

A checkpoint is written to a temporary file in the same folder, fsynced and renamed over the
target, so a crash mid-write never leaves a half-written `last.pt`. The previous `last.pt` is
kept as `last.prev.pt`; if the newest file turns out truncated or corrupt (disk full, copied
while being written) loading falls back to it and says so. The dict layout is documented in
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch

from emorec.errors import EmorecError

FORMAT = "emorec-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
PREVIOUS = "last.prev.pt"
BEST = "best.pt"

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    import timm

    import emorec

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading refuses.
    return {"emorec": str(emorec.__version__), "torch": str(torch.__version__), "timm": str(timm.__version__),
            "python": platform.python_version()}


def save_checkpoint(path: str | Path, state: dict[str, Any], keep_previous: bool = False) -> Path:
    """Write `state` atomically to `path`; with `keep_previous` the old file becomes last.prev.pt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows), hence best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


CHOICES = {"best": (BEST, LAST, PREVIOUS), "last": (LAST, PREVIOUS)}


def _candidates(run_dir_or_file: str | Path, which: str) -> list[Path]:
    """The files `run_dir_or_file` may mean, in the order to try them."""
    if which not in CHOICES:
        raise ValueError(f"which must be one of {sorted(CHOICES)}, not {which!r}")
    p = Path(run_dir_or_file)
    if p.is_dir():
        # A run directory, or its checkpoints/ folder itself.
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        return [folder / name for name in CHOICES[which]]
    if p.is_file():
        return [p, p.with_name(PREVIOUS)] if p.name == LAST else [p]
    raise EmorecError(f"model not found: {p}; pass a run directory written by `emorec train` or a .pt checkpoint file")


def resolve_checkpoint(run_dir_or_file: str | Path, which: str = "best") -> Path:
    """The checkpoint file a path means: a file is itself; a run directory means
    checkpoints/best.pt, else checkpoints/last.pt (`which="last"`, for resuming: last.pt, else
    last.prev.pt). Raises EmorecError when there is none."""
    candidates = _candidates(run_dir_or_file, which)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = " or ".join(c.name for c in candidates)
    raise EmorecError(f"no checkpoint in run directory {run_dir_or_file}; expected checkpoints/{names} from `emorec train`")


def run_dir_of(checkpoint_file: str | Path) -> Path:
    p = Path(checkpoint_file).resolve()
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def _read(path: Path, map_location) -> dict[str, Any]:
    """Load one file; any failure to unpickle (truncation, garbage) becomes a ValueError."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for bad files
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or ["unreadable"]
        reason = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0])
        raise ValueError(f"{type(e).__name__}: {reason.split('. ')[0]}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError("not an emorec checkpoint (no 'format: emorec-checkpoint' key)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"format_version {ckpt['format_version']} is newer than this emorec understands")
    return ckpt


def load_checkpoint(run_dir_or_file: str | Path, map_location: Any = "cpu", *, which: str = "best") -> dict[str, Any]:
    """Load the checkpoint `resolve_checkpoint(run_dir_or_file, which)` means; a file that is
    truncated or corrupt is reported and the next candidate (last.pt, then last.prev.pt) used.

    The path actually used is stored under the key "loaded_from".
    """
    candidates = _candidates(run_dir_or_file, which)
    if not any(c.is_file() for c in candidates):
        resolve_checkpoint(run_dir_or_file, which)  # raises the "no checkpoint" error
    problems = []
    for candidate in candidates:
        if not candidate.is_file():
            if candidate.name != BEST:  # a run without a best.pt yet is normal, not a problem
                problems.append(f"{candidate} is missing")
            continue
        try:
            ckpt = _read(candidate, map_location)
        except ValueError as e:
            problems.append(f"{candidate} is truncated or corrupt ({e})")
            continue
        if problems:
            what = "the previous checkpoint" if candidate.name == PREVIOUS else "the checkpoint"
            log.warning("%s; using %s %s (epoch %s)", "; ".join(problems), what, candidate, ckpt.get("epoch"))
        ckpt["loaded_from"] = str(candidate)
        return ckpt
    raise EmorecError(f"no usable checkpoint: {'; '.join(problems)}; pass a run directory that holds "
                      "checkpoints/last.pt or a checkpoint file written by `emorec train`")


def check_compatible(ckpt: dict[str, Any], cfg, label_map) -> None:
    """Refuse a checkpoint made by another model or label map (one line naming the difference).

    `label_map` is a `LabelMap` or a list of class names.
    """
    names = list(getattr(label_map, "names", label_map))
    where = ckpt.get("loaded_from", "checkpoint")
    if list(ckpt.get("label_map", [])) != names:
        raise EmorecError(f"{where} was trained on labels {list(ckpt.get('label_map', []))} but the data has "
                          f"{names}; resume on the run's own manifest.csv or start a new run")
    from emorec.models import model_signature

    ours = model_signature(cfg, len(names))
    theirs = ckpt.get("model_signature", {})
    diffs = [f"{k}: checkpoint {theirs.get(k)!r} vs config {v!r}" for k, v in ours.items() if theirs.get(k) != v]
    if diffs:
        raise EmorecError(f"{where} was made by a different model ({'; '.join(diffs)}); resume with the run's own "
                          "config (drop the conflicting --set) or start a new run with another train.name")
