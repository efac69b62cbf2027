"""Names of the built-in models, where their files lie, and what their cards say.

A built-in model is a run directory inside the package (`models/NAME/checkpoints/best.pt`,
`card.json`, `MODEL_CARD.md`), so every command that reads a run reads it unchanged once
`resolve_model` has turned the name into that folder. A path that exists always wins over a
name: a run folder called `faces` in the working directory is that run (as a local folder wins
over a hub name in Hugging Face's `from_pretrained`).

card.json records the checkpoint's size and SHA-256, so a partial or damaged install is one line
naming the file, not an unpickling traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emorec.errors import EmorecError

MODELS_DIR = Path(__file__).resolve().parent / "models"
BUILTIN_NAMES = ("faces", "photos")
CARD_JSON = "card.json"
CARD_MD = "MODEL_CARD.md"
CHECKPOINT = Path("checkpoints") / "best.pt"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    folder: Path

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT

    @property
    def card_path(self) -> Path:
        return self.folder / CARD_MD

    def card(self) -> dict[str, Any]:
        """card.json: the measured figures and how the model was made."""
        path = self.folder / CARD_JSON
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise EmorecError(f"built-in model '{self.name}' is not installed: {path} is missing; reinstall emorec "
                              f"or build it with `emorec models build {self.name}`") from None
        except (OSError, json.JSONDecodeError) as e:
            raise EmorecError(f"built-in model '{self.name}': {path} is damaged ({type(e).__name__}); reinstall emorec "
                              f"or build it with `emorec models build {self.name}`") from None

    def check(self) -> None:
        """Raise a one-line EmorecError unless the checkpoint is the file its card describes."""
        expected = self.card().get("checkpoint", {})
        fix = f"reinstall emorec, or build it with `emorec models build {self.name}`"
        if not self.checkpoint.is_file():
            raise EmorecError(f"built-in model '{self.name}' is missing its weights: {self.checkpoint} does not exist; {fix}")
        size = self.checkpoint.stat().st_size
        if expected.get("bytes") is not None and size != expected["bytes"]:
            raise EmorecError(f"built-in model '{self.name}' is damaged: {self.checkpoint} has {size} bytes, its card "
                              f"says {expected['bytes']}; {fix}")
        if expected.get("sha256") and file_sha256(self.checkpoint) != expected["sha256"]:
            raise EmorecError(f"built-in model '{self.name}' is damaged: {self.checkpoint} does not match the SHA-256 in "
                              f"{self.folder / CARD_JSON}; {fix}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_builtin_name(text: str | os.PathLike) -> bool:
    return str(text) in BUILTIN_NAMES


def builtin_model(name: str) -> BuiltinModel:
    if name not in BUILTIN_NAMES:
        raise EmorecError(f"unknown built-in model '{name}'; the built-in models are {', '.join(BUILTIN_NAMES)}")
    return BuiltinModel(name, MODELS_DIR / name)


def list_builtin() -> list[BuiltinModel]:
    return [builtin_model(name) for name in BUILTIN_NAMES]


def _looks_like_a_name(text: str) -> bool:
    """A bare word (no folder, no file suffix): meant as a model name, not a path."""
    return os.sep not in text and "/" not in text and not Path(text).suffix


def resolve_model(spec: str | os.PathLike) -> Path:
    """The path a MODEL argument means: an existing path as is; a built-in model's name -> its
    folder (checked against its card); a bare word that is neither -> a one-line error listing
    the built-in names. Other missing paths are returned for the caller's own "not found" error."""
    path = Path(spec)
    if path.exists():
        return path
    text = str(spec)
    if is_builtin_name(text):
        model = builtin_model(text)
        model.check()
        return model.folder
    if _looks_like_a_name(text):
        raise EmorecError(f"model '{text}' not found: it is neither a path nor a built-in model (built-in: "
                          f"{', '.join(BUILTIN_NAMES)}; `emorec models` lists them)")
    return path


def builtin_of(path: str | os.PathLike) -> BuiltinModel | None:
    """The built-in model a resolved path (its folder or checkpoint) belongs to, else None."""
    try:
        resolved = Path(path).resolve()
    except OSError:
        return None
    for model in list_builtin():
        if resolved == model.folder or model.folder in resolved.parents:
            return model
    return None


def user_cache_dir() -> Path:
    """Where files derived from built-in models (their ONNX exports) go: the package folder may be
    read-only. $XDG_CACHE_HOME/emorec, else ~/.cache/emorec, as pip and Hugging Face do."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emorec"


def derived_dir(model: BuiltinModel) -> Path:
    """A per-weights folder for a built-in model's derived files: new weights, new folder."""
    sha = model.card().get("checkpoint", {}).get("sha256", "unknown")[:12]
    return user_cache_dir() / "builtin" / f"{model.name}-{sha}"
