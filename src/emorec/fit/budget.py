"""The time budget of a search, and what a piece of work is expected to cost.

Like AutoGluon's `fit(time_limit=...)`: the budget covers everything (feature extraction, every
candidate, the fine-tune, the refit and the final test pass), and a resumed search counts what its
earlier runs spent. Work that is not expected to fit in what is left is skipped (and listed as
such); the extraction gets what is left as a deadline, and trainer runs as `train.time_limit_s`,
so a slower-than-expected one ends in time.
Estimates come from timing the backbone on a few random images on this machine, corrected by
what the previous extraction actually took.
"""

from __future__ import annotations

import math
import re
import time

from emorec.errors import EmorecError

_UNITS = {"s": 1, "m": 60, "h": 3600}
# Safety factors of the estimates: forward passes measured on random input miss the loader; a
# training step is about three forward passes.
OVERHEAD = 1.3
TRAIN_STEP_FORWARDS = 3.0
# Decoding is measured on the data's own files (`decode_seconds`); this is the figure for a
# search with no readable sample. A flat 10 ms made FER-2013's extraction estimate 2-3x too
# long: its 48 px JPEGs decode in well under a millisecond.
DECODE_S = 0.01
DECODE_SAMPLE = 24


REFIT_MARGIN = 2.0  # a refit's time varies with its iterations to converge: keep twice the mean fit


def refit_reserve(probe_seconds: list[float], folds: int, members: int = 1) -> float:
    """Seconds to keep for refitting the leading probe on train + val at the end.

    A cross-validated probe's recorded seconds are `folds` fits on (folds - 1) / folds of train +
    val plus its fit on train alone, so one fit is about seconds / (folds + 1); the refit is one
    such fit on all of train + val (5/4 of a fold's data with 5 folds), one per member for the
    ensemble of `members` backbones. The slowest probe stands for the leader, which can change.
    (Keeping the slowest probe's whole cross-validation back left about a quarter of a 25-minute
    budget unused on Emotion6.)"""
    if not probe_seconds:
        return 0.0
    one_fit = max(probe_seconds) / (max(1, folds) + 1)
    return REFIT_MARGIN * one_fit * folds / max(1, folds - 1) * max(1, members)


def parse_duration(text: str | float | int) -> float:
    """'30m', '1h', '1h30m', '90s', '1800' (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", s):
            seconds = float(s)
        elif re.fullmatch(r"([0-9]+(\.[0-9]+)?[hms])+", s):
            seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"([0-9]+(?:\.[0-9]+)?)([hms])", s))
        else:
            raise EmorecError(f"budget '{text}' is not a duration; write e.g. 30m, 1h, 1h30m, 90s or 1800 (seconds)")
    if seconds <= 0:
        raise EmorecError(f"budget '{text}' must be positive")
    return seconds


class OutOfBudget(EmorecError):
    """A piece of work that found, once started, that the rest of it would not fit its budget
    (a probe's cross-validation); `needed_s` is what it expected to need."""

    def __init__(self, message: str, needed_s: float):
        super().__init__(message)
        self.needed_s = needed_s


def duration_text(seconds: float) -> str:
    """'45 s', '12 min': how long something takes, as a person reads it."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def budget_text(seconds: float) -> str:
    """A budget as --budget takes it: '30m', '2h', '100s'."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def budget_for(seconds: float) -> str:
    """A --budget that covers `seconds` with a quarter to spare, in whole minutes: '3m'."""
    return f"{max(1, math.ceil(1.25 * seconds / 60))}m"


class Budget:
    """Seconds allowed from construction on, less what earlier runs of the same search spent
    (`spent_before`, from fit.json); `clock` is injectable for tests."""

    def __init__(self, seconds: float, clock=time.monotonic, spent_before: float = 0.0):
        self.seconds = float(seconds)
        self.clock = clock
        self.started = clock()
        self.spent_before = float(spent_before)

    def elapsed(self) -> float:
        """Seconds spent on the search: by this run and, when resumed, the earlier ones."""
        return self.spent_before + self.clock() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, estimate_s: float, reserve_s: float = 0.0) -> bool:
        """True when work expected to take `estimate_s` fits, keeping `reserve_s` for later."""
        return estimate_s <= self.remaining() - reserve_s

    def share(self, seconds: float) -> Budget:
        """`seconds` from now on, on the same clock: what one piece of work (a candidate) may spend."""
        return Budget(seconds, self.clock)


class Estimates:
    """Seconds the pieces of one search are expected to take: the split sizes (`counts`) times
    each backbone's forward time per image, measured once per backbone. Extraction estimates are
    corrected by what the last extraction actually took."""

    def __init__(self, counts: dict[str, int], image_size: int, views: int, device, decode_s: float = DECODE_S):
        self.counts, self.image_size, self.views, self.device = counts, image_size, views, device
        self.decode_s = decode_s  # seconds to decode and resize one image of the data
        self.per_image: dict[str, float] = {}
        self.calibration = 1.0  # actual / estimated extraction time, from the last extraction

    def seconds_per_image(self, name: str) -> float:
        if name not in self.per_image:
            self.per_image[name] = seconds_per_image(name, self.image_size, self.device)
        return self.per_image[name]

    def test_pass(self, name: str, views: int = 2, scale: float = 1.0) -> float:
        """The final test pass: model build, the test images through `views` TTA views at `scale`
        times the pixels of the search's image size, report."""
        return 15.0 + OVERHEAD * self.counts["test"] * (views * scale * self.seconds_per_image(name) + self.decode_s)

    def extraction(self, name: str) -> float:
        """One multi-level extraction of `name` over train (centre, mirror and the augmented views)
        and val (centre, mirror)."""
        forwards = self.counts["train"] * (2 + self.views) + self.counts["val"] * 2
        images = self.counts["train"] + self.counts["val"]
        return 10.0 + self.calibration * OVERHEAD * (forwards * self.seconds_per_image(name)
                                                     + images * (1 + self.views) * self.decode_s)

    def calibrate(self, estimated: float, actual: float) -> None:
        """Scale later extraction estimates by how far off `estimated` was (a factor kept in 0.5-3)."""
        self.calibration = max(0.5, min(3.0, actual / max(estimated, 1e-6) * self.calibration))

    def finetune_epoch(self, name: str) -> float:
        """One epoch of training `name` on the train images, validating on the val images."""
        spi = self.seconds_per_image(name)
        return OVERHEAD * (self.counts["train"] * (TRAIN_STEP_FORWARDS * spi + self.decode_s)
                           + self.counts["val"] * (spi + self.decode_s))


def seconds_per_image(backbone_name: str, image_size: int, device, repeats: int = 3, batch: int = 8) -> float:
    """Forward seconds per image of a random-init `backbone_name` at `image_size` (median of
    `repeats` batches after a warm-up): the unit every estimate of the search is made of."""
    import torch

    from emorec.models.backbone import create_backbone

    model = create_backbone(backbone_name).eval().to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad():
        model.forward_features(x)  # warm-up: allocations, kernel choice
        for _ in range(repeats):
            t = time.perf_counter()
            model.forward_features(x)
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] / batch


def decode_seconds(paths: list[str], image_size: int, sample: int = DECODE_SAMPLE) -> float:
    """Median seconds to decode one of `paths` (an evenly spread sample of them) and resize it to
    `image_size`, as the loader does; DECODE_S when none of the sample can be read."""
    from emorec.data.imageio import load_rgb

    step = max(1, len(paths) // sample)
    times = []
    for path in paths[::step][:sample]:
        t = time.perf_counter()
        try:
            load_rgb(path, min_size=image_size).resize((image_size, image_size))
        except EmorecError:
            continue
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] if times else DECODE_S
