"""`predict VIDEO --faces --annotate DIR`: the analysed frames as an H.264 video with boxes and
labels drawn, and a timeline picture of each track's emotion probabilities against time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emorec.faces.annotate import PALETTE, draw_faces
from emorec.video.frames import Frame
from emorec.video.predict import NO_FACE, FrameRow

MAX_TIMELINE_TRACKS = 6  # the longest tracks; a crowd would make the picture unreadable


class VideoAnnotator:
    """For one input: `add(frame, rows)` per analysed frame, then `close()` -> (video, timeline) paths.

    The output video runs at the analysed rate (frames per second of video time), taken from the
    first two frames' timestamps, so it lasts as long as the input.
    """

    def __init__(self, folder: str | Path, source: str | Path, labels: list[str]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = Path(source).stem
        self.video_path = self.folder / f"{stem}.annotated.mp4"
        self.timeline_path = self.folder / f"{stem}.timeline.png"
        self.labels = labels
        self._pending: tuple[float, object] | None = None  # the first frame, until the rate is known
        self._container = self._stream = None
        self._series: dict[int, list[tuple[float, np.ndarray]]] = {}

    def add(self, frame: Frame, rows: list[FrameRow]) -> None:
        faces = [{"box": r.box, "top_k": [{"label": r.top[0][0], "probability": r.top[0][1]}]} for r in rows if r.box is not None]
        picture = draw_faces(frame.image, faces, self.labels)
        for row in rows:
            if row.track is not None and row.probs is not None:
                self._series.setdefault(row.track, []).append((row.time_s, row.probs))
        if self._container is None:
            if self._pending is None:
                self._pending = (frame.time_s, picture)
                return
            first_time, first = self._pending
            self._open(first.size, 1.0 / max(frame.time_s - first_time, 1e-3))
            self._encode(first)
            self._pending = None
        self._encode(picture)

    def _open(self, size, rate: float) -> None:
        import av

        self._container = av.open(str(self.video_path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=max(1, round(rate)))
        # H.264 in yuv420p needs even sides: the last odd row / column is cropped.
        self._stream.width, self._stream.height = size[0] // 2 * 2, size[1] // 2 * 2
        self._stream.pix_fmt = "yuv420p"

    def _encode(self, picture) -> None:
        import av

        w, h = self._stream.width, self._stream.height
        frame = av.VideoFrame.from_image(picture.crop((0, 0, w, h)) if picture.size != (w, h) else picture)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> tuple[Path | None, Path | None]:
        if self._pending is not None:  # a one-frame input
            self._open(self._pending[1].size, 1.0)
            self._encode(self._pending[1])
            self._pending = None
        if self._container is None:
            return None, None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self.video_path, self._timeline()

    def _timeline(self) -> Path | None:
        if not self._series:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tracks = sorted(self._series, key=lambda t: -len(self._series[t]))[:MAX_TIMELINE_TRACKS]
        fig, axes = plt.subplots(len(tracks), 1, figsize=(9, 1.8 * len(tracks) + 0.6), sharex=True, squeeze=False)
        for ax, track in zip(axes[:, 0], sorted(tracks)):
            times = [t for t, _ in self._series[track]]
            probs = np.stack([p for _, p in self._series[track]])
            for i, label in enumerate(self.labels):
                if label != NO_FACE:
                    ax.plot(times, probs[:, i], color=PALETTE[i % len(PALETTE)], label=label, linewidth=1.4)
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"track {track}")
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle("emotion probabilities per face track")
        fig.tight_layout()
        fig.savefig(self.timeline_path, dpi=100)
        plt.close(fig)
        return self.timeline_path
