"""What a search keeps in OUTPUT besides its runs, and reads back when run again: `fit.json`
(the source, the settings, each backbone's feature caches, which candidate OUTPUT/best/ holds, the
result) and `splits.csv` (the splits, made once, so a resumed search compares candidates on the
same images).

Finished candidates are known by their ids, which do not name the settings they ran with (image
size, views, weights, seed, config): a search run again in the same OUTPUT with other settings
would reuse them as if they were its own. So the settings are recorded when a search starts and
a resumed one with other values is refused (`check_settings`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from emorec.errors import EmorecError

STATE_FILE = "fit.json"
SPLITS_FILE = "splits.csv"


class SearchState(dict):
    """The contents of OUTPUT/fit.json; `save` writes them back atomically."""

    def __init__(self, path: Path, values: dict):
        super().__init__(values)
        self.path = path

    @classmethod
    def load(cls, output: Path, source) -> SearchState:
        """OUTPUT/fit.json, refusing a search of another source."""
        path = output / STATE_FILE
        state = json.loads(path.read_text()) if path.is_file() else {}
        source = str(source)
        if state.get("source") not in (None, source):
            raise EmorecError(f"{output} holds a search of {state['source']}, not {source}; pass another "
                              "--output (or the same source to resume it)")
        state["source"] = source
        state.setdefault("caches", {})
        return cls(path, state)

    def check_settings(self, settings: dict[str, Any], describe: Callable[[str, Any], str],
                       same: Callable[[str, Any, Any], bool] = lambda _key, a, b: a == b) -> None:
        """Record `settings` (JSON-able, by key) in fit.json, refusing with a one-line error the
        first one whose recorded value differs (`same`); `describe(key, value)` writes a setting
        as the command line gives it. Keys recorded or given only once (a backbone added to a
        resumed search, a setting older searches did not record) are not compared."""
        settings = json.loads(json.dumps(settings, default=str))  # tuples as lists, as read back
        recorded = self.get("settings") or {}
        for key, value in settings.items():
            if key in recorded and not same(key, recorded[key], value):
                old = describe(key, recorded[key])
                raise EmorecError(f"{self.path.parent} holds a search made with {old}, not {describe(key, value)}; "
                                  f"its finished candidates would be reused as if made so: pass a new --output, or "
                                  f"{old} to resume it")
        self["settings"] = {**recorded, **settings}
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(f".json.tmp-{os.getpid()}")  # processes sharing OUTPUT (--storage) each write their own
        tmp.write_text(json.dumps(dict(self), indent=1, default=str))
        tmp.replace(self.path)


def search_splits(source, output: Path, data_cfg, state: SearchState):
    """The search's splits: OUTPUT/splits.csv when resuming, else the source split once (by
    `data_cfg`: its fractions, seed and images_root) and written there."""
    from emorec.data.manifest import read_manifest
    from emorec.data.split import ensure_splits

    path = output / SPLITS_FILE
    if path.is_file():
        return read_manifest(str(path))
    manifest = ensure_splits(read_manifest(str(source), data_cfg.images_root), data_cfg)
    manifest.to_csv(path)
    state.save()
    return read_manifest(str(path))


def train_and_val(manifest):
    """Train and val only: the test images are never decoded during the search."""
    from emorec.data.manifest import Manifest

    return Manifest([s for s in manifest.samples if s.split in ("train", "val")], manifest.source)
