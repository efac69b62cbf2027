"""Images of one split that have a copy in another: the leak that flatters a val score.

FER-2013 holds the same faces more than once, across splits too (`emorec data check` on it: 182
exact and 280 near groups spanning two splits). A model that saw a face in training scores its
copy in val too well, so figures are also reported without those images.
"""

from __future__ import annotations

from emorec.data.check import check_dataset
from emorec.data.manifest import Manifest, Sample


def samples_without_copies(manifest: Manifest, split: str = "val", seen: str = "train", near: bool = False,
                           workers: int = 2) -> tuple[list[Sample], int]:
    """(the `split` samples without an exact copy in `seen` -- or a near one, with `near` --, how
    many were dropped)."""
    report = check_dataset(manifest, workers=workers, near_duplicates=near)
    copied = set()
    for group in report.groups:
        if (group.exact or near) and {seen, split} <= set(group.splits):
            copied |= {i for i in group.members if manifest.samples[i].split == split}
    kept = [s for i, s in enumerate(manifest.samples) if s.split == split and i not in copied]
    return kept, len(copied)
