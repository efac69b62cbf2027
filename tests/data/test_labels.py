"""LabelMap: sorted and stable from a manifest, saved and loaded as JSON."""

from __future__ import annotations

import json

import pytest

from emorec import MIKELS_EMOTIONS
from emorec.data.labels import LabelMap
from emorec.data.manifest import Manifest, Sample
from emorec.errors import EmorecError


def test_from_manifest_sorts_names_whatever_the_sample_order():
    a = Manifest([Sample("/x/1", "sad"), Sample("/x/2", "anger"), Sample("/x/3", "joy")], "a")
    b = Manifest(list(reversed(a.samples)), "b")
    assert LabelMap.from_manifest(a).names == ["anger", "joy", "sad"] == LabelMap.from_manifest(b).names


def test_encode_index_and_json_round_trip(tmp_path):
    labels = LabelMap(sorted(MIKELS_EMOTIONS))
    assert len(labels) == 8 and labels.index("awe") == 2
    assert labels.encode(["fear", "amusement"]) == [6, 0]
    path = labels.save(tmp_path / "label_map.json")
    assert json.loads(path.read_text()) == {"names": labels.names}
    assert LabelMap.load(path) == labels


def test_unknown_label_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(EmorecError, match="label 'boredom' is not in the label map"):
        LabelMap(["a", "b"]).index("boredom")
    with pytest.raises(EmorecError, match="label map not found"):
        LabelMap.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(EmorecError, match="not a label map"):
        LabelMap.load(tmp_path / "bad.json")
    with pytest.raises(EmorecError, match="repeated"):
        LabelMap(["a", "a"])
