"""Test videos, encoded in the test with PyAV from images: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_video(path: Path, frames, fps: int = 10, codec: str = "libx264") -> Path:
    """Encode PIL images (all one size, even sides) as a video file; the container from the suffix."""
    import av

    frames = list(frames)
    width, height = frames[0].size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image.convert("RGB"))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sliding_portrait(portrait: Image.Image, count: int, size=(640, 480), step: int = 4, seed: int = 0) -> list[Image.Image]:
    """`count` frames of `portrait` (scaled to 260 px) moving right `step` px a frame over noise."""
    rng = np.random.default_rng(seed)
    background = Image.fromarray(rng.integers(60, 200, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
    face = portrait.resize((260, 260))
    frames = []
    for i in range(count):
        frame = background.copy()
        frame.paste(face, (60 + step * i, 110))
        frames.append(frame)
    return frames


def numbered_frames(count: int, size=(64, 48)) -> list[Image.Image]:
    """Flat frames whose grey level is 10 x their number (to tell which frame was chosen)."""
    return [Image.new("RGB", size, (10 * i % 256,) * 3) for i in range(count)]
