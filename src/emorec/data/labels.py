"""Label names <-> class indices, stable across runs and saved beside every output as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from emorec.errors import EmorecError


class LabelMap:
    """Class index i is `names[i]`. `from_manifest` sorts the names, so the same label set always
    gets the same indices; the constructor keeps the given order (a checkpoint's saved order)."""

    def __init__(self, names: Iterable[str]):
        self.names = [str(n) for n in names]
        if len(set(self.names)) != len(self.names):
            raise EmorecError(f"label map has repeated names: {self.names}; each label must appear once")
        self._index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def from_manifest(cls, manifest) -> "LabelMap":
        return cls(manifest.labels())

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelMap) and self.names == other.names

    def __repr__(self) -> str:
        return f"LabelMap({self.names})"

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise EmorecError(f"label '{name}' is not in the label map ({', '.join(self.names)}); "
                              "use one of those labels") from None

    def encode(self, labels: Iterable[str]) -> list[int]:
        return [self.index(label) for label in labels]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"names": self.names}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelMap":
        path = Path(path)
        try:
            names = json.loads(path.read_text())["names"]
        except FileNotFoundError:
            raise EmorecError(f"label map not found: {path}; pass the label_map.json written with the run") from None
        except (ValueError, KeyError, TypeError):
            raise EmorecError(f"{path} is not a label map; expected JSON {{\"names\": [...]}}") from None
        return cls(names)
