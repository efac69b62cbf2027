"""Stratified train/val/test splits that keep existing splits and duplicate groups intact.

Default 80/10/10 are the proportions of the 17,149 / 2,145 / 2,145 split the recipe was designed
on. Copies of one image (a `groups` id shared by duplicates) always land in the same split: a
duplicate in train and test is leakage that inflates test accuracy.

A class too small to give every requested split an image is refused here, once, for every
command that splits (`emorec data split`, train, fit, features, the benchmarks): left alone it
would come out of a later step as a class missing from val, or (scikit-learn's splitters) as
an error about test_size that names no class and no fix.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Hashable, Sequence

from emorec.data.manifest import Manifest, Sample
from emorec.errors import EmorecError

HOLDOUT_FIRST = ("test", "val", "train")


def _targets(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) group counts for a class of `n` groups; a requested split gets at least one
    group when the class has enough groups to keep one for training too."""
    val, test = round(n * val_fraction), round(n * test_fraction)
    wanted = int(val_fraction > 0) + int(test_fraction > 0)
    if n > wanted:
        val = max(val, 1) if val_fraction > 0 else 0
        test = max(test, 1) if test_fraction > 0 else 0
    while val + test >= n and (val or test):  # keep at least one for training
        if test >= val and test:
            test -= 1
        else:
            val -= 1
    return val, test


def stratified_split(
    manifest: Manifest,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    groups: Sequence[Hashable] | None = None,
) -> Manifest:
    """Assign a split to every sample without one, per class, reproducibly from `seed`.

    `groups[i]` is the group id of `manifest.samples[i]` (e.g. a content hash); a group is placed
    as a unit, counted under its most common label; a group with members already split goes to
    their split (test before val before train, so leaked copies leave train). Fractions are of
    groups per class.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise EmorecError(f"split fractions val={val_fraction}, test={test_fraction} are invalid; each must be in "
                          "[0, 1) and together below 1, e.g. data.val_fraction=0.1 data.test_fraction=0.1")
    samples = manifest.samples
    if groups is None:
        groups = list(range(len(samples)))
    if len(groups) != len(samples):
        raise ValueError("groups must have one entry per sample")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)

    fixed: dict[Hashable, str] = {}
    by_class: dict[str, list[Hashable]] = defaultdict(list)
    for g, idx in members.items():
        existing = {samples[i].split for i in idx if samples[i].split}
        if existing:
            # A group already in two splits goes to the held-out one: leaked copies leave train.
            fixed[g] = next(sp for sp in HOLDOUT_FIRST if sp in existing)
        elif len(idx):
            labels = [samples[i].label for i in idx]
            by_class[max(sorted(set(labels)), key=labels.count)].append(g)

    rng = random.Random(seed)
    assigned = dict(fixed)
    for label in sorted(by_class):
        class_groups = by_class[label]
        rng.shuffle(class_groups)
        n_val, n_test = _targets(len(class_groups), val_fraction, test_fraction)
        for j, g in enumerate(class_groups):
            assigned[g] = "test" if j < n_test else "val" if j < n_test + n_val else "train"

    split_of = {i: assigned[g] for g, idx in members.items() for i in idx}
    _check_every_split_has_each_class(manifest.source, samples, split_of, by_class, val_fraction, test_fraction)
    out = [Sample(s.path, s.label, split_of[i]) for i, s in enumerate(samples)]
    return Manifest(out, manifest.source)


def min_images_per_class(val_fraction: float, test_fraction: float) -> int:
    """The smallest class `stratified_split` can split: one image for each requested held-out
    split (it gives each at least one) and one left for training."""
    return 1 + int(val_fraction > 0) + int(test_fraction > 0)


def too_few_images(source, small: dict[str, int], minimum: int, fix: str) -> EmorecError:
    """The one-line error of a dataset too small to split: the classes short of images (with
    their counts), the minimum per class, and `fix`."""
    listed = ", ".join(f"{label} ({n} image{'s' * (n != 1)})" for label, n in sorted(small.items()))
    which = f"class {listed} has" if len(small) == 1 else f"classes {listed} have"
    return EmorecError(f"{source} is too small to split: {which} fewer than the {minimum} images per class a split "
                       f"needs; {fix}")


def _check_every_split_has_each_class(source, samples: list[Sample], split_of: dict[int, str],
                                      split_classes: dict[str, list[Hashable]], val_fraction: float,
                                      test_fraction: float) -> None:
    """Each class that was split has an image in train and in every requested split (images it
    already had there count: a class with given val images needs no new one)."""
    wanted = {"train", *(["val"] if val_fraction > 0 else []), *(["test"] if test_fraction > 0 else [])}
    held: dict[str, set[str]] = defaultdict(set)
    for i, s in enumerate(samples):
        held[s.label].add(split_of[i])
    small = {label: len(groups) for label, groups in split_classes.items() if wanted - held[label]}
    if not small:
        return
    minimum = min_images_per_class(val_fraction, test_fraction)
    fix = f"add images of {'that class' if len(small) == 1 else 'those classes'} (copies of one image count once)"
    if test_fraction > 0 and val_fraction > 0:
        fix += (f", or split without a test set ({minimum - 1} per class: data.test_fraction=0, "
                "emorec data split --test 0)")
    raise too_few_images(source, small, minimum, fix)


def check_trainable(manifest: Manifest) -> None:
    """At least two classes, a train split, and every class seen in validation when there is one."""
    labels = manifest.labels()
    if len(labels) < 2:
        found = labels[0] if labels else "none"
        raise EmorecError(f"{manifest.source} has a single class ({found}); a classifier needs at least two "
                          "labels: add images of other classes")
    splits = manifest.splits()
    if "train" not in splits:
        raise EmorecError(f"{manifest.source} has no train split; mark some rows train or drop the split column")
    if "val" in splits:
        in_val = set(manifest.subset("val").labels())
        lacking = [c for c in labels if c not in in_val]
        if lacking:
            counts = manifest.class_counts()
            raise EmorecError(
                f"{manifest.source}: no validation image of class {', '.join(lacking)} ({counts[lacking[0]]} images "
                "in all); add images of that class or move some to the val split")


def ensure_splits(manifest: Manifest, data_cfg, groups: Sequence[Hashable] | None = None) -> Manifest:
    """The manifest with every sample in train, val or test, checked trainable.

    Existing splits are kept: rows without a split are split by `data_cfg` fractions; a fully
    split manifest without val gets val carved from its train rows. `groups` (one id per sample)
    keeps duplicates in one split, see `stratified_split`. With `data_cfg.cache_dir` set, paths
    point to the pre-resized copy written by `emorec data cache` (splits come from the originals).
    """
    fractions = (data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.split_seed)
    if manifest.has_splits and "val" not in manifest.splits() and data_cfg.val_fraction > 0:
        unsplit_train = [Sample(s.path, s.label, None if s.split == "train" else s.split) for s in manifest.samples]
        manifest = stratified_split(Manifest(unsplit_train, manifest.source), data_cfg.val_fraction, 0.0,
                                    data_cfg.split_seed, groups)
    elif not manifest.has_splits or groups is not None:
        manifest = stratified_split(manifest, *fractions, groups=groups)
    check_trainable(manifest)
    if getattr(data_cfg, "cache_dir", None):
        from emorec.data.cache import use_cache

        manifest = use_cache(manifest, data_cfg.cache_dir)
    return manifest
