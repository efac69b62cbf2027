"""`emorec data check` and `emorec data split`: what is in a dataset, what is wrong with it, and a
clean split that keeps copies of one image together.

Duplicates are grouped in two tiers. Exact: the same file bytes or the same decoded pixels.
Near: a 64-bit dHash within `NEAR_DHASH_BITS` bits, confirmed by a correlation of 16x16
thumbnails >= `NEAR_CORRELATION` (on FER-2013, pairs above 0.95 were all the same photo when
inspected, re-encoded or watermarked; below 0.92 most were different people). A group spanning
two splits is train/test leakage; a group with two labels is label noise.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emorec.data.hashing import ImageFacts, inspect_images, near_pairs
from emorec.data.labels import LabelMap
from emorec.data.manifest import CSV_NAMES, SPLITS, Manifest, Sample
from emorec.data.split import check_trainable, ensure_splits
from emorec.errors import EmorecError

NEAR_DHASH_BITS = 10  # candidate pairs; the thumbnail correlation decides
NEAR_CORRELATION = 0.95
FLAT_STD = 2.0  # a thumbnail this flat (blank image) has no correlation: compare levels instead
FLAT_LEVEL_DIFF = 4.0
RGB_LIKE_MODES = {"RGB", "YCbCr"}  # JPEG colour is reported as RGB by Pillow


@dataclass
class Problem:
    path: str
    label: str
    split: str | None
    kind: str  # zero-byte | unreadable | truncated | tiny | mode
    detail: str


@dataclass
class DuplicateGroup:
    members: list[int]  # indices into the manifest's samples
    exact: bool  # every member is a byte- or pixel-identical copy of the others
    splits: list[str]
    labels: list[str]

    @property
    def cross_split(self) -> bool:
        return len(set(self.splits)) > 1

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1


@dataclass
class CheckReport:
    manifest: Manifest
    facts: list[ImageFacts]
    problems: list[Problem]
    groups: list[DuplicateGroup]
    min_side: int
    files: dict[str, str] = field(default_factory=dict)  # name -> written path

    # --- numbers -------------------------------------------------------------------------------
    @property
    def class_counts(self) -> dict[str, int]:
        return self.manifest.class_counts()

    @property
    def imbalance_ratio(self) -> float:
        counts = list(self.class_counts.values())
        return max(counts) / min(counts) if counts else 0.0

    def counts(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)

    def group_ids(self) -> list[int]:
        """A group id per sample (singletons get their own), for `stratified_split(groups=...)`."""
        ids = list(range(len(self.manifest.samples)))
        for g in self.groups:
            for i in g.members:
                ids[i] = g.members[0]
        return ids

    def summary(self) -> dict:
        exact = [g for g in self.groups if g.exact]
        near = [g for g in self.groups if not g.exact]
        split_counts: dict[str, dict[str, int]] = {}
        for s in self.manifest.samples:
            row = split_counts.setdefault(s.split or "unsplit", {})
            row[s.label] = row.get(s.label, 0) + 1
        modes = Counter(f.mode for f in self.facts if f.readable)
        sides = [min(f.width, f.height) for f in self.facts if f.readable]
        return {
            "source": self.manifest.source,
            "images": len(self.manifest.samples),
            "classes": self.class_counts,
            "splits": split_counts,
            "imbalance_ratio": round(self.imbalance_ratio, 3),
            "modes": dict(modes.most_common()),
            "shorter_side": {"min": min(sides), "median": statistics.median(sides), "max": max(sides)} if sides else {},
            "unreadable": self.counts("unreadable"),
            "truncated": self.counts("truncated"),
            "zero_byte": self.counts("zero-byte"),
            "tiny": self.counts("tiny"),
            "odd_mode": self.counts("mode"),
            "min_side": self.min_side,
            "exact_duplicate_groups": len(exact),
            "exact_duplicate_extra_copies": sum(len(g.members) - 1 for g in exact),
            "near_duplicate_groups": len(near),
            "near_duplicate_images": sum(len(g.members) for g in near),
            "cross_split_groups": {"exact": sum(g.cross_split for g in exact), "near": sum(g.cross_split for g in near)},
            "cross_split_images": sum(len(g.members) for g in self.groups if g.cross_split),
            "conflicting_label_groups": {"exact": sum(g.conflicting for g in exact),
                                         "near": sum(g.conflicting for g in near)},
        }

    # --- output --------------------------------------------------------------------------------
    def __str__(self) -> str:
        s = self.summary()
        lines = [f"dataset      {s['source']}", _class_table(self.manifest),
                 f"imbalance    {s['imbalance_ratio']:.1f} (largest / smallest class)"]
        if s["shorter_side"]:
            side = s["shorter_side"]
            lines.append(f"sizes        shorter side min {side['min']}, median {side['median']:g}, max {side['max']} px")
        lines.append("modes        " + ", ".join(f"{m} {n:,}" for m, n in s["modes"].items()))
        lines.append(f"unreadable   {s['unreadable']:,} unreadable, {s['truncated']:,} truncated, "
                     f"{s['zero_byte']:,} zero-byte; {s['tiny']:,} tiny (shorter side < {self.min_side} px); "
                     f"{s['odd_mode']:,} not RGB")
        lines.append(f"duplicates   exact: {s['exact_duplicate_groups']:,} groups ({s['exact_duplicate_extra_copies']:,} "
                     f"extra copies); near: {s['near_duplicate_groups']:,} groups ({s['near_duplicate_images']:,} images)")
        cs, cl = s["cross_split_groups"], s["conflicting_label_groups"]
        lines.append(f"leakage      {cs['exact'] + cs['near']:,} groups in two splits ({cs['exact']:,} exact, "
                     f"{cs['near']:,} near; {s['cross_split_images']:,} images)")
        lines.append(f"label noise  {cl['exact'] + cl['near']:,} groups with conflicting labels ({cl['exact']:,} exact, "
                     f"{cl['near']:,} near)")
        if cs["exact"] + cs["near"]:
            lines.append("             `emorec data split` writes splits that keep each group in one split")
        if self.files:
            folder = Path(next(iter(self.files.values()))).parent
            lines.append(f"lists        {folder}/ ({', '.join(Path(p).name for p in self.files.values())})")
        return "\n".join(lines)

    def write(self, folder: str | Path) -> dict[str, str]:
        """summary.json, problems.csv, duplicates.csv, label_map.json and report.txt in `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        samples = self.manifest.samples
        files = {name: str(folder / name) for name in
                 ("report.txt", "summary.json", "problems.csv", "duplicates.csv", "label_map.json")}
        (folder / "summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        with (folder / "problems.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split", "problem", "detail"])
            w.writerows([p.path, p.label, p.split or "", p.kind, p.detail] for p in self.problems)
        with (folder / "duplicates.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["group", "kind", "cross_split", "conflicting_labels", "path", "label", "split"])
            for n, g in enumerate(self.groups, start=1):
                for i in g.members:
                    w.writerow([n, "exact" if g.exact else "near", int(g.cross_split), int(g.conflicting),
                                samples[i].path, samples[i].label, samples[i].split or ""])
        LabelMap.from_manifest(self.manifest).save(folder / "label_map.json")
        self.files = files
        (folder / "report.txt").write_text(str(self) + "\n")
        return files


def _class_table(manifest: Manifest) -> str:
    splits = sorted({s.split for s in manifest.samples if s.split}, key=lambda x: SPLITS.index(x))
    counts = Counter((s.label, s.split) for s in manifest.samples)
    totals = manifest.class_counts()
    n = len(manifest.samples)
    width = max(8, *(len(c) for c in totals))
    header = f"{'class':<{width}}" + "".join(f"{sp:>9}" for sp in splits) + f"{'total':>9}{'share':>8}"
    rows = [header]
    for label, total in totals.items():
        rows.append(f"{label:<{width}}" + "".join(f"{counts[label, sp]:>9,}" for sp in splits)
                    + f"{total:>9,}{100 * total / n:>7.1f}%")
    rows.append(f"{'all':<{width}}" + "".join(f"{sum(counts[c, sp] for c in totals):>9,}" for sp in splits)
                + f"{n:>9,}{100.0:>7.1f}%")
    return "\n".join(rows)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _problems(manifest: Manifest, facts: list[ImageFacts], min_side: int) -> list[Problem]:
    out = []
    for s, f in zip(manifest.samples, facts):
        if f.error:
            kind = "zero-byte" if f.error == "zero-byte file" else "truncated" if "truncated" in f.error else "unreadable"
            out.append(Problem(s.path, s.label, s.split, kind, f.error))
            continue
        if min(f.width, f.height) < min_side:
            out.append(Problem(s.path, s.label, s.split, "tiny", f"{f.width}x{f.height}"))
        if f.mode not in RGB_LIKE_MODES:
            out.append(Problem(s.path, s.label, s.split, "mode", f.mode))
    return out


def _near_duplicate_pairs(facts: list[ImageFacts], readable: list[int]) -> np.ndarray:
    """(P, 2) sample indices of confirmed near-duplicate pairs."""
    pairs = near_pairs([facts[i].dhash for i in readable], NEAR_DHASH_BITS)
    if not len(pairs):
        return pairs
    thumbs = np.frombuffer(b"".join(facts[i].thumb for i in readable), np.uint8)
    thumbs = thumbs.reshape(len(readable), -1).astype(np.float32)
    mean, std = thumbs.mean(1), thumbs.std(1)
    centred = thumbs - mean[:, None]
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-6)
    a, b = pairs[:, 0], pairs[:, 1]
    corr = np.einsum("ij,ij->i", unit[a], unit[b])
    flat = (std[a] < FLAT_STD) & (std[b] < FLAT_STD)
    keep = np.where(flat, np.abs(mean[a] - mean[b]) <= FLAT_LEVEL_DIFF, corr >= NEAR_CORRELATION)
    return np.asarray(readable)[pairs[keep]]


def duplicate_groups(manifest: Manifest, facts: list[ImageFacts], near: bool = True) -> list[DuplicateGroup]:
    """Groups of >= 2 samples showing the same image, exact copies first, then near ones."""
    n = len(facts)
    exact = _UnionFind(n)
    first: dict[str, int] = {}
    for i, f in enumerate(facts):
        keys = [("file", f.file_hash)] if f.file_hash else []
        if f.readable:
            keys.append(("pixels", f.pixel_hash))
        for key in keys:
            j = first.setdefault(str(key), i)
            if j != i:
                exact.union(i, j)
    both = _UnionFind(n)
    both.parent = list(exact.parent)
    if near:
        readable = [i for i, f in enumerate(facts) if f.readable]
        for i, j in _near_duplicate_pairs(facts, readable).tolist():
            both.union(i, j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[both.find(i)].append(i)
    groups = []
    samples = manifest.samples
    for idx in members.values():
        if len(idx) < 2:
            continue
        is_exact = len({exact.find(i) for i in idx}) == 1
        groups.append(DuplicateGroup(idx, is_exact, [samples[i].split or "" for i in idx],
                                     [samples[i].label for i in idx]))
    groups.sort(key=lambda g: (not g.exact, g.members[0]))
    return groups


def check_dataset(manifest: Manifest, workers: int = 2, min_side: int = 32, near_duplicates: bool = True,
                  progress: bool = True) -> CheckReport:
    """Read every image once and report classes, broken files, odd modes, tiny images, duplicates,
    cross-split leakage and conflicting labels. A single-class dataset is an error."""
    if not manifest.samples:
        raise EmorecError(f"no images in {manifest.source}; point the check at a folder or CSV with images")
    if len(manifest.labels()) < 2:
        raise EmorecError(f"{manifest.source} has a single class ({manifest.labels()[0]}); a classifier needs at "
                          "least two labels: add images of other classes")
    facts = inspect_images([s.path for s in manifest.samples], workers=workers, progress=progress)
    problems = _problems(manifest, facts, min_side)
    groups = duplicate_groups(manifest, facts, near=near_duplicates)
    return CheckReport(manifest, facts, problems, groups, min_side)


def default_report_dir(source: str | Path) -> Path:
    """./emorec-check/<dataset name>/: the folder's name, or a CSV's folder for labels.csv-style names."""
    path = Path(source).expanduser().resolve()
    name = path.parent.name if path.is_file() and path.name in CSV_NAMES else path.stem if path.is_file() else path.name
    return Path("emorec-check") / (name or "dataset")


def split_dataset(manifest: Manifest, output: str | Path, data_cfg, workers: int = 2, progress: bool = True,
                  report: CheckReport | None = None) -> tuple[Manifest, dict]:
    """A clean split manifest written to `output` (CSV) with label_map.json beside it.

    Unreadable and zero-byte files are dropped; existing splits are kept; duplicate groups (exact
    and near) are placed as units, a group already in two splits going to its held-out split
    (test, then val), so no image is both trained on and evaluated.
    """
    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise EmorecError(f"split output {output} must be a .csv file; pass e.g. --output splits.csv")
    report = report or check_dataset(manifest, workers=workers, progress=progress)
    bad = {i for i, f in enumerate(report.facts) if not f.readable}
    ids = report.group_ids()
    keep = [i for i in range(len(manifest.samples)) if i not in bad]
    kept = Manifest([Sample(**vars(manifest.samples[i])) for i in keep], manifest.source)
    before = [s.split for s in kept.samples]
    clean = ensure_splits(kept, data_cfg, groups=[ids[i] for i in keep])
    check_trainable(clean)
    clean.to_csv(output)
    LabelMap.from_manifest(clean).save(output.parent / "label_map.json")
    stats = {
        "written": str(output),
        "images": len(clean.samples),
        "dropped_unreadable": len(bad),
        "moved_to_keep_groups_together": sum(1 for b, s in zip(before, clean.samples) if b and b != s.split),
        "duplicate_groups": len(report.groups),
        "splits": {sp: len(clean.subset(sp).samples) for sp in SPLITS if sp in clean.splits()},
    }
    return clean, stats
