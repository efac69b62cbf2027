"""Face tracks: the same person keeps the same number while they stay in view.

A short IoU matcher, not a re-identification tracker (DeepSORT, ByteTrack with appearance
features): between analysed frames a few hundred milliseconds apart a face moves by a fraction of
its box, so the box overlap alone links it, and no appearance model (whose weights would have to
be downloaded) is needed. Boxes are matched to the live tracks by the Hungarian assignment on
IoU (scipy); a track not seen for `max_gap_s` ends, and a face that comes back later gets a new
number, as it would in any tracker without re-identification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) against every box in b (M, 4), corners x1, y1, x2, y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class _Track:
    number: int
    box: np.ndarray
    last_seen_s: float


@dataclass
class IouTracker:
    min_iou: float = 0.3
    max_gap_s: float = 1.0
    _tracks: list[_Track] = field(default_factory=list)
    _next: int = 1

    @property
    def started(self) -> int:
        """How many tracks have been started so far."""
        return self._next - 1

    def update(self, boxes: list, time_s: float) -> list[int]:
        """Track numbers (from 1) for `boxes` of the frame at `time_s`, in their order."""
        from scipy.optimize import linear_sum_assignment

        self._tracks = [t for t in self._tracks if time_s - t.last_seen_s <= self.max_gap_s]
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        numbers = [0] * len(boxes)
        if self._tracks and len(boxes):
            iou = box_iou_matrix(np.stack([t.box for t in self._tracks]), boxes)
            for ti, bi in zip(*linear_sum_assignment(-iou)):
                if iou[ti, bi] >= self.min_iou:
                    track = self._tracks[ti]
                    track.box, track.last_seen_s = boxes[bi], time_s
                    numbers[bi] = track.number
        for bi, number in enumerate(numbers):
            if number == 0:
                numbers[bi] = self._next
                self._tracks.append(_Track(self._next, boxes[bi], time_s))
                self._next += 1
        return numbers


class TrackSmoother:
    """Each track's probabilities averaged over the trailing `window_s` seconds (causal, so a row
    never depends on frames after it)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._history: dict[object, list[tuple[float, np.ndarray]]] = {}

    def smooth(self, key, time_s: float, probs: np.ndarray) -> np.ndarray:
        history = [(t, p) for t, p in self._history.get(key, []) if time_s - t < self.window_s]
        history.append((time_s, np.asarray(probs, dtype=float)))
        self._history[key] = history
        return np.mean([p for _, p in history], axis=0)
