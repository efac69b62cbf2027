"""The time budget of a search, and what a piece of work is expected to cost.

Like AutoGluon's `fit(time_limit=...)`: the budget covers everything (feature extraction, every
candidate, the fine-tune and the final test pass). Work that is not expected to fit in what is
left is skipped (and listed as such); trainer runs also get the time left as
`train.time_limit_s`, so a slower-than-expected run ends in time with its best checkpoint.
Estimates come from timing the backbone on a few random images on this machine, corrected by
what the previous extraction actually took.
"""

from __future__ import annotations

import re
import time

from emorec.errors import EmorecError

_UNITS = {"s": 1, "m": 60, "h": 3600}


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


class Budget:
    """Seconds allowed from construction on; `clock` is injectable for tests."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = float(seconds)
        self.clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, estimate_s: float, reserve_s: float = 0.0) -> bool:
        """True when work expected to take `estimate_s` fits, keeping `reserve_s` for later."""
        return estimate_s <= self.remaining() - reserve_s


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
