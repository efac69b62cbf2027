"""stratified_split / ensure_splits: proportions per class, reproducible, respecting what exists."""

from __future__ import annotations

from collections import Counter

import pytest

from emorec.config import DataConfig
from emorec.data.manifest import Manifest, Sample
from emorec.data.split import ensure_splits, stratified_split
from emorec.errors import EmorecError


def _manifest(counts: dict[str, int], split: str | None = None) -> Manifest:
    return Manifest([Sample(f"/d/{label}_{i}.jpg", label, split) for label, n in counts.items() for i in range(n)], "mem")


def test_every_class_is_split_80_10_10():
    out = stratified_split(_manifest({"a": 100, "b": 50, "c": 20}), 0.1, 0.1, seed=0)
    per = Counter((s.label, s.split) for s in out.samples)
    assert [per["a", s] for s in ("train", "val", "test")] == [80, 10, 10]
    assert [per["b", s] for s in ("train", "val", "test")] == [40, 5, 5]
    assert [per["c", s] for s in ("train", "val", "test")] == [16, 2, 2]


def test_split_is_reproducible_from_the_seed_and_changes_with_it():
    m = _manifest({"a": 40, "b": 40})
    first = stratified_split(m, 0.1, 0.1, seed=3)
    assert first.samples == stratified_split(m, 0.1, 0.1, seed=3).samples
    assert first.samples != stratified_split(m, 0.1, 0.1, seed=4).samples


def test_small_classes_still_get_a_val_and_test_image():
    out = stratified_split(_manifest({"a": 3, "b": 30}), 0.1, 0.1, seed=0)
    assert Counter(s.split for s in out.samples if s.label == "a") == {"train": 1, "val": 1, "test": 1}


def test_existing_splits_are_kept_and_only_the_rest_is_split():
    m = _manifest({"a": 10, "b": 10})
    m.samples[0].split = "test"
    m.samples[10].split = "train"
    out = stratified_split(m, 0.2, 0.0, seed=0)
    assert out.samples[0].split == "test" and out.samples[10].split == "train"
    assert all(s.split in ("train", "val") for s in out.samples[1:10])


def test_duplicate_groups_land_in_one_split():
    m = _manifest({"a": 60, "b": 60})
    groups = [i // 4 for i in range(len(m.samples))]  # every 4 consecutive samples are copies
    m.samples[5].split = "test"  # one member already placed: its whole group follows
    out = stratified_split(m, 0.1, 0.1, seed=1, groups=groups)
    by_group: dict[int, set] = {}
    for g, s in zip(groups, out.samples):
        by_group.setdefault(g, set()).add(s.split)
    assert all(len(splits) == 1 for splits in by_group.values())
    assert by_group[1] == {"test"}
    assert {"train", "val", "test"} <= {s.split for s in out.samples}


def test_ensure_splits_splits_unsplit_data_and_keeps_full_splits():
    cfg = DataConfig()
    out = ensure_splits(_manifest({"a": 20, "b": 20}), cfg)
    assert out.has_splits and out.splits() == {"train", "val", "test"}
    full = Manifest(_manifest({"a": 5, "b": 5}, "train").samples + _manifest({"a": 1, "b": 1}, "val").samples, "x")
    assert ensure_splits(full, cfg).samples == full.samples


def test_ensure_splits_carves_val_from_train_when_only_train_and_test_exist():
    m = Manifest(_manifest({"a": 20, "b": 20}, "train").samples + _manifest({"a": 2, "b": 2}, "test").samples, "x")
    out = ensure_splits(m, DataConfig())
    counts = Counter(s.split for s in out.samples)
    assert counts == {"train": 36, "val": 4, "test": 4}


def test_single_class_dataset_is_an_error():
    with pytest.raises(EmorecError, match="single class \\(joy\\).*at least two"):
        ensure_splits(_manifest({"joy": 30}), DataConfig())


@pytest.mark.parametrize("val, test, minimum", [(0.1, 0.1, 3), (0.1, 0.0, 2), (0.0, 0.1, 2)])
def test_a_class_too_small_for_every_split_is_a_one_line_error_naming_the_minimum(val, test, minimum):
    """Below the minimum a class would miss a split silently (no test image) or fail later with
    no fix named; at the minimum every class has an image in every split."""
    small = _manifest({"common": 50, "rare": minimum - 1, "tiny": 1})
    with pytest.raises(EmorecError, match=f"too small to split: classes rare \\({minimum - 1} images?\\), tiny "
                                          f"\\(1 image\\) have fewer than the {minimum} images per class a split "
                                          "needs; add images of those classes") as raised:
        stratified_split(small, val, test, seed=0)
    assert "\n" not in str(raised.value)
    assert ("data.test_fraction=0" in str(raised.value)) == (val > 0 and test > 0)
    enough = stratified_split(_manifest({"common": 50, "rare": minimum}), val, test, seed=0)
    wanted = {"train"} | ({"val"} if val else set()) | ({"test"} if test else set())
    assert {s.split for s in enough.samples if s.label == "rare"} == wanted


def test_every_command_that_splits_gets_the_small_dataset_error():
    """ensure_splits (train, fit, features, emorec data split) splits through stratified_split,
    carving val out of a given train split too."""
    with pytest.raises(EmorecError, match="class rare \\(2 images\\) has fewer than the 3 images per class"):
        ensure_splits(_manifest({"common": 50, "rare": 2}), DataConfig())
    given = Manifest(_manifest({"a": 20, "b": 1}, "train").samples + _manifest({"a": 2, "b": 2}, "test").samples, "x")
    with pytest.raises(EmorecError, match="x is too small to split: class b \\(1 image\\) has fewer than the 2"):
        ensure_splits(given, DataConfig())


def test_a_class_with_given_val_images_needs_no_new_one():
    m = _manifest({"a": 20, "b": 1})
    m.samples.append(Sample("/d/b_val.jpg", "b", "val"))
    out = stratified_split(m, 0.1, 0.0, seed=0)
    assert {s.split for s in out.samples if s.label == "b"} == {"train", "val"}


def test_a_class_without_a_validation_image_is_an_error():
    fixed = Manifest(_manifest({"a": 5, "b": 5}, "train").samples + _manifest({"a": 1}, "val").samples, "x")
    with pytest.raises(EmorecError, match="no validation image of class b"):
        ensure_splits(fixed, DataConfig())


def test_invalid_fractions_are_an_error():
    with pytest.raises(EmorecError, match="fractions"):
        stratified_split(_manifest({"a": 10, "b": 10}), 0.6, 0.5, seed=0)
