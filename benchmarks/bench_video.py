"""Video: analysed frames per second of `emorec predict VIDEO --faces`, and memory against length.

A 640 x 480 video at 10 fps is encoded here from scikit-image's astronaut portrait (one face, or
two with matplotlib's Grace Hopper beside her: `--faces-in-frame 2`), sliding across textured
noise; nothing is downloaded. emorec's video path (`video.predict.VideoPrediction`: PyAV decode,
MTCNN on a copy capped at 1280 px shorter side, aligned crops, the IoU tracker) runs it at
`--fps 10` with the face recipe's classifier shape (tf_efficientnet_lite0 + recipe head at 96 px,
random weights: speed does not depend on them) exported to ONNX. The detector and classifier
time are split.

Memory: peak RSS of a fresh process analysing a short and a ten times longer video at 2 fps
(1 and 10 minutes; `--quick`: 10 s and 100 s). Frames are streamed, so the two should match.

Target (issue 25): >= 10 analysed frames/s (real time at --fps 10); peak RSS within 10%.

    python benchmarks/bench_video.py --quick
    python benchmarks/bench_video.py --faces-in-frame 2
    python benchmarks/bench_video.py --detect-every 5   # the detector on every 5th analysed frame
Last line: `video: emorec X vs reference 10 frames/s ratio=R` (reference: real time at --fps 10).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "video"
FPS = 10
SIZE = (640, 480)


def portraits(count: int):
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    faces = [Image.fromarray(skimage.data.astronaut())]
    if count > 1:
        faces.append(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    return [f.resize((200, 200)) for f in faces]


def write_video(path: Path, seconds: float, faces: int) -> Path:
    """Encode `seconds` of 640 x 480 H.264 at 10 fps, frame by frame (never all in memory)."""
    import av
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    background = Image.fromarray(rng.integers(60, 200, (SIZE[1] // 8, SIZE[0] // 8, 3), dtype=np.uint8)).resize(SIZE)
    people = portraits(faces)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(int(seconds * FPS)):
            frame = background.copy()
            shift = (i * 3) % 160  # back and forth across the frame
            for j, person in enumerate(people):
                frame.paste(person, (20 + shift + 300 * j, 140))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def face_model(path: Path) -> Path:
    """The face recipe's classifier (lite0 + recipe head, 96 px, 7 labels), exported with metadata."""
    import numpy as np

    from emorec.config import Config
    from emorec.data.preprocess import Preprocessing
    from emorec.models import build_model
    from emorec.serving.export import export_onnx

    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.weights = "tf_efficientnet_lite0", False, None
    model = build_model(cfg.model, 7).eval()
    prep = Preprocessing(resize=[110], crop=[96, 96], interpolation="bilinear", mean=[0.5] * 3, std=[0.5] * 3)
    metadata = {"labels": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"], "preprocessing": prep.to_dict()}
    batch = np.random.default_rng(0).standard_normal((4, 3, 96, 96)).astype(np.float32)
    export_onnx(types.SimpleNamespace(model=model), path, batch, metadata)
    return path


def analyse(model: Path, video: Path, fps: float, detect_every: int = 1) -> dict:
    """Run the video path once; frames/s and where the time went."""
    from emorec.faces.detect import create_detector
    from emorec.serving.predict import OnnxPredictor
    from emorec.video.predict import VideoPrediction

    prediction = VideoPrediction(OnnxPredictor(model), video, create_detector("mtcnn"), fps=fps, top_k=3,
                                 detect_every=detect_every)
    started = time.perf_counter()
    rows = sum(1 for _ in prediction.rows())
    seconds = time.perf_counter() - started
    stats = prediction.stats
    return {"frames": stats.frames, "detected_frames": stats.detected, "rows": rows, "seconds": seconds, "frames_per_s": stats.frames / seconds,
            "detect_s": stats.detect_s, "classify_s": stats.classify_s, "tracks": stats.tracks,
            "other_s": seconds - stats.detect_s - stats.classify_s}


def peak_rss_mb(model: Path, video: Path, fps: float, threads: int | None) -> dict:
    """Analyse `video` in a fresh process; its peak RSS (MB) and frame count."""
    code = ("import json, resource, sys; sys.path.insert(0, sys.argv[1]); import bench_video as B; "
            "r = B.analyse(__import__('pathlib').Path(sys.argv[2]), __import__('pathlib').Path(sys.argv[3]), float(sys.argv[4])); "
            "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))")
    env = None
    if threads:
        import os

        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(model), str(video), str(fps)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--faces-in-frame", type=int, choices=[1, 2], default=1)
    p.add_argument("--detect-every", type=int, default=1, help="run the detector on every N-th analysed frame (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the short / long video memory runs")
    p.add_argument("--seconds", type=float, default=None, help="length of the throughput video (default 30, quick 6)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    C.apply_threads(args)
    tmp = Path(tempfile.mkdtemp(prefix="emorec_bench_video_"))
    model = face_model(tmp / "faces.onnx")
    seconds = args.seconds or (6 if args.quick else 30)
    clip = write_video(tmp / "clip.mp4", seconds, args.faces_in_frame)
    analyse(model, write_video(tmp / "warm.mp4", 1, args.faces_in_frame), FPS)  # warm-up: weights, thread pools
    speed = analyse(model, clip, FPS, args.detect_every)
    C.log(f"throughput: {speed}")
    short_s, long_s = (10, 100) if args.quick else (60, 600)
    memory = {}
    for label, length in () if args.no_memory else (("short", short_s), ("long", long_s)):
        memory[label] = peak_rss_mb(model, write_video(tmp / f"{label}.mp4", length, args.faces_in_frame), 2.0, args.threads)
        memory[label]["video_s"] = length
        C.log(f"memory {label} ({length} s): {memory[label]['peak_rss_mb']:.0f} MB over {memory[label]['frames']} frames")
    growth = memory["long"]["peak_rss_mb"] / memory["short"]["peak_rss_mb"] - 1 if memory else None
    rows = [["analysed frames/s (--fps 10)", speed["frames_per_s"]],
            [f"detector s/frame (on 1 in {args.detect_every})", speed["detect_s"] / speed["frames"]],
            ["classifier s/frame", speed["classify_s"] / speed["frames"]],
            ["decode + track + rest s/frame", speed["other_s"] / speed["frames"]]]
    if memory:
        rows += [[f"peak RSS {short_s} s video, MB", memory["short"]["peak_rss_mb"]],
                 [f"peak RSS {long_s} s video, MB", memory["long"]["peak_rss_mb"]],
                 ["RSS growth, long vs short", f"{growth:+.1%}"]]
    print(C.table(rows, ["measure", "value"]))
    C.finish(NAME, args, speed["frames_per_s"], float(FPS), "frames/s",
             {"faces_in_frame": args.faces_in_frame, "detect_every": args.detect_every, "video": f"{SIZE[0]}x{SIZE[1]} H.264 {FPS} fps, {seconds} s",
              "throughput": speed, "memory": memory, "rss_growth": growth,
              "headline": "analysed frames/s at --fps 10 vs real time (10 frames/s)"},
             notes=[f"RSS growth {growth:+.1%} from a {short_s} s to a {long_s} s video at 2 fps (target < 10%)"
                    if memory else "memory not measured (--no-memory)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
