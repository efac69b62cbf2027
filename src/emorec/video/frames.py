"""Frames of a video file, decoded as a stream with PyAV (FFmpeg's own libraries).

torchvision's video reading is deprecated; PyAV decodes every container and codec FFmpeg knows
(mp4, mov, mkv, webm, avi; H.264, HEVC, VP8/9, AV1, MPEG-4...). Frames are yielded one at a time
and dropped by the caller, so memory does not grow with the video's length. A video that breaks
off (truncated, corrupt packets) keeps the frames decoded before the break; `VideoFrames.stopped`
says where and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from emorec.data.inputs import VIDEO_EXTENSIONS, is_video  # noqa: F401 (re-exported: the video names live with the inputs)
from emorec.errors import EmorecError

DEFAULT_FPS = 4.0  # analysed frames per second: a few per second follow expressions, at a fraction of the cost


@dataclass
class Frame:
    index: int  # the frame's number in the video, from 0
    time_s: float
    image: Image.Image  # RGB


class VideoFrames:
    """Iterate the chosen frames of `path`: `fps` per second (by timestamp), or every `every`-th.

    Raises EmorecError when the file cannot be opened as a video at all; a stream that breaks off
    later ends the iteration and sets `stopped` (one line: the frame and the reason).
    """

    def __init__(self, path: str | Path, fps: float | None = DEFAULT_FPS, every: int | None = None):
        if every is not None and every < 1:
            raise EmorecError(f"--every must be at least 1, got {every}")
        if every is None and (fps is None or fps <= 0):
            raise EmorecError(f"--fps must be positive, got {fps}")
        self.path, self.fps, self.every = Path(path), fps, every
        self.stopped: str | None = None
        self.decoded = 0  # frames decoded, chosen or not

    def expected(self) -> int | None:
        """About how many frames will be chosen (for a progress bar), from the container's header;
        None when the video does not say its length or cannot be opened."""
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                frames, duration = stream.frames or None, _declared_duration(container, stream)
        except (av.error.FFmpegError, OSError, ValueError, IndexError):
            return None
        if self.every:
            return -(-frames // self.every) if frames else None
        return int(duration * self.fps) + 1 if duration else None

    def __iter__(self) -> Iterator[Frame]:
        import av

        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise EmorecError(f"cannot read video {self.path}: {_reason(e)}; not a video, or truncated before its index "
                              "(an MP4 cut short loses its index at the end)") from None
        with container:
            if not container.streams.video:
                raise EmorecError(f"{self.path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding inside FFmpeg
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            declared = _declared_duration(container, stream)
            next_time, index, last_time = 0.0, -1, 0.0
            try:
                for frame in container.decode(stream):
                    index += 1
                    self.decoded += 1
                    time_s = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else index / rate
                    last_time = time_s
                    if self.every is not None:
                        if index % self.every:
                            continue
                    elif time_s + 1e-6 < next_time:
                        continue
                    else:
                        while next_time <= time_s + 1e-6:  # one frame per 1/fps slot, without drift
                            next_time += 1.0 / self.fps
                    yield Frame(index, time_s, frame.to_image())
            except (av.error.FFmpegError, OSError, ValueError, MemoryError) as e:
                self.stopped = f"stopped after frame {index} ({last_time:.2f} s): {_reason(e)}"
                return
            # FFmpeg ends a cut-off stream quietly; the length the container declares tells.
            if declared and last_time + 2.0 / rate < declared:
                self.stopped = (f"stopped after frame {index} ({last_time:.2f} s) of a video that declares {declared:.2f} s: "
                                "the file is truncated or damaged")


def _declared_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None  # microseconds


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:200]
