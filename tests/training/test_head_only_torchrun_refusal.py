"""Head-only training under torchrun is refused before any feature extraction starts (every rank
would otherwise extract the whole cache into the same folder at once)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from emorec import api
from emorec.errors import EmorecError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_runs import tiny_config  # noqa: E402


def test_refused_before_extracting(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    extracted = []
    monkeypatch.setattr(api, "feature_cache_for", lambda cfg: extracted.append(cfg))
    cfg = tiny_config(tiny_dataset, tmp_path, "head", "train.head_only=true")
    with pytest.raises(EmorecError, match="start it without torchrun"):
        api.train(cfg)
    assert extracted == []
