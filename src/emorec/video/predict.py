"""Emotions over time: one row per face (or per whole frame) of every analysed frame of a video.

`predict_video` streams the chosen frames (`frames.VideoFrames`), finds the faces with the same
detector and crops as photos (`faces.detect.detect_faces`, `faces.crop`), classifies the crops
with any predictor (run, ONNX model), numbers the faces by track (`track.IouTracker`) and, with
`smooth_s`, averages each track's probabilities over the trailing window: labels then come from
the smoothed values and the raw ones are kept beside them. Without a detector the whole frame is
classified. A photo is a video of one frame, so a folder that mixes both gives one kind of row.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emorec.video.frames import DEFAULT_FPS, Frame, VideoFrames, is_video
from emorec.video.track import IouTracker, TrackSmoother

NO_FACE = "no_face"


@dataclass
class FrameRow:
    path: str
    frame: int
    time_s: float
    top: list[tuple[str, float]]  # (label, probability), most probable first; smoothed with smooth_s
    track: int | None = None
    box: list[float] | None = None
    det_score: float | None = None
    raw_top: list[tuple[str, float]] | None = None  # the unsmoothed values, with smooth_s
    probs: np.ndarray | None = None  # every label's probability, as `top` was chosen from (timelines)


@dataclass
class VideoStats:
    frames: int = 0  # analysed frames
    detected: int = 0  # frames the detector ran on
    rows: int = 0
    detect_s: float = 0.0
    classify_s: float = 0.0
    stopped: str | None = None  # where a broken video stopped decoding
    tracks: int = 0


@dataclass
class VideoPrediction:
    """`rows()` streams the rows; `stats` fills in as they go."""

    predictor: object
    path: Path
    detector: object | None = None
    fps: float | None = DEFAULT_FPS
    every: int | None = None
    top_k: int = 3
    margin: float = 0.2
    smooth_s: float = 0.0
    detect_size: int | None = None
    # Run the detector on every n-th analysed frame only; the frames between reuse its boxes
    # (crops at the last found places). The detector is nearly all the cost (benchmarks/RESULTS.md,
    # "Video"), so this trades box lag (up to n / fps seconds) for speed, as fer's `frequency` does.
    detect_every: int = 1
    stats: VideoStats = field(default_factory=VideoStats)

    def frames(self) -> Iterator[Frame]:
        if not is_video(self.path):
            from emorec.data.imageio import load_rgb

            yield Frame(0, 0.0, load_rgb(self.path))
            return
        source = VideoFrames(self.path, self.fps, self.every)
        yield from source
        self.stats.stopped = source.stopped

    def rows(self, on_frame=None) -> Iterator[FrameRow]:
        """The rows, frame after frame; `on_frame(frame, rows)` is called once a frame's rows are
        out, while its image is still there (to draw on it)."""
        from emorec.faces.detect import DETECT_SIZE

        if self.detect_every < 1:
            from emorec.errors import EmorecError

            raise EmorecError(f"--detect-every must be at least 1, got {self.detect_every}")
        tracker = IouTracker()
        faces: list = []  # the last detection's, reused until the next one (detect_every)
        smoother = TrackSmoother(self.smooth_s) if self.smooth_s > 0 else None
        labels = list(self.predictor.labels)
        k = max(1, min(self.top_k, len(labels)))
        detect_size = self.detect_size or DETECT_SIZE
        for frame in self.frames():
            self.stats.frames += 1
            if self.detector is not None and (self.stats.frames - 1) % self.detect_every == 0:
                faces = self._detect(frame, detect_size)
            rows = self._frame_rows(frame, faces, tracker, smoother, labels, k)
            for row in rows:
                self.stats.rows += 1
                yield row
            if on_frame:
                on_frame(frame, rows)
            frame.image = None  # the frame is done: nothing keeps it alive
        self.stats.tracks = tracker.started

    def _detect(self, frame: Frame, detect_size: int) -> list:
        from emorec.faces.detect import detect_faces

        started = time.perf_counter()
        faces = detect_faces(self.detector, frame.image, detect_size)
        self.stats.detect_s += time.perf_counter() - started
        self.stats.detected += 1
        return faces

    def _frame_rows(self, frame: Frame, faces: list, tracker, smoother, labels, k) -> list[FrameRow]:
        path = str(self.path)
        if self.detector is None:
            started = time.perf_counter()
            probs = np.asarray(self.predictor.predict_images([frame.image]))[0]
            self.stats.classify_s += time.perf_counter() - started
            return [_row(path, frame, probs, labels, k, smoother, "frame")]
        from emorec.faces.predict import face_crops

        if not faces:
            tracker.update([], frame.time_s)
            return [FrameRow(path, frame.index, frame.time_s, [(NO_FACE, float("nan"))])]
        started = time.perf_counter()
        probs = np.asarray(self.predictor.predict_images(face_crops(frame.image, faces, self.margin)))
        self.stats.classify_s += time.perf_counter() - started
        numbers = tracker.update([f.box for f in faces], frame.time_s)
        rows = []
        for face, number, p in zip(faces, numbers, probs):
            row = _row(path, frame, p, labels, k, smoother, number)
            row.track, row.box, row.det_score = number, [float(v) for v in face.box], float(face.score)
            rows.append(row)
        return rows


def _top(probs: np.ndarray, labels: list[str], k: int) -> list[tuple[str, float]]:
    return [(labels[i], float(probs[i])) for i in np.argsort(-probs, kind="stable")[:k]]


def _row(path: str, frame: Frame, probs: np.ndarray, labels, k, smoother, key) -> FrameRow:
    if smoother is None:
        return FrameRow(path, frame.index, frame.time_s, _top(probs, labels, k), probs=np.asarray(probs, dtype=float))
    smoothed = smoother.smooth(key, frame.time_s, probs)
    return FrameRow(path, frame.index, frame.time_s, _top(smoothed, labels, k), raw_top=_top(probs, labels, k), probs=smoothed)


class FrameRowWriter:
    """CSV (path, frame, time_s[, track, x1, y1, x2, y2, det_score], label_1, probability_1, ...
    [, raw_label_1, raw_probability_1, ...]) or JSON Lines, chosen by the file's extension."""

    def __init__(self, path: str | Path, top_k: int, faces: bool, smoothed: bool):
        self.path = Path(path)
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("w", newline="")
        self.faces, self.smoothed, self.top_k = faces, smoothed, top_k
        if not self.jsonl:
            self.csv = csv.writer(self.file)
            head = ["path", "frame", "time_s"] + (["track", "x1", "y1", "x2", "y2", "det_score"] if faces else [])
            head += [f"{kind}_{i}" for i in range(1, top_k + 1) for kind in ("label", "probability")]
            if smoothed:
                head += [f"raw_{kind}_{i}" for i in range(1, top_k + 1) for kind in ("label", "probability")]
            self.csv.writerow(head)

    def write(self, row: FrameRow) -> None:
        if self.jsonl:
            record = {"path": row.path, "frame": row.frame, "time_s": round(row.time_s, 3)}
            if self.faces:
                record.update(track=row.track, box=None if row.box is None else [round(v, 1) for v in row.box],
                              det_score=None if row.det_score is None else round(row.det_score, 4))
            record["predictions"] = _pairs(row.top)
            if self.smoothed:
                record["raw_predictions"] = None if row.raw_top is None else _pairs(row.raw_top)
            self.file.write(json.dumps(record) + "\n")
            return
        cells = [row.path, row.frame, f"{row.time_s:.3f}"]
        if self.faces:
            box = [f"{v:.1f}" for v in row.box] if row.box else [""] * 4
            cells += ["" if row.track is None else row.track, *box, "" if row.det_score is None else f"{row.det_score:.4f}"]
        cells += _cells(row.top, self.top_k)
        if self.smoothed:
            cells += _cells(row.raw_top or [], self.top_k)
        self.csv.writerow(cells)

    def close(self) -> None:
        self.file.close()


def _pairs(top) -> list[dict]:
    return [{"label": label, "probability": None if np.isnan(p) else round(p, 6)} for label, p in top]


def _cells(top, width: int) -> list:
    cells = []
    for label, p in top:
        cells += [label, "" if np.isnan(p) else f"{p:.6f}"]
    return cells + [""] * (2 * width - len(cells))


def format_row(row: FrameRow, width: int) -> str:
    """One aligned console line: path, frame and time, track and box, then `label probability` pairs."""
    where = f"{row.path:<{width}}  frame {row.frame:<5} {row.time_s:7.2f}s"
    if row.box is not None:
        where += f"  track {row.track:<3} [{','.join(f'{v:.0f}' for v in row.box)}]"
    guesses = "  ".join(f"{label:<12} {'' if np.isnan(p) else f'{p:6.1%}'}" for label, p in row.top)
    return f"{where}  {guesses}"
