"""`emorec predict MODEL VIDEO [--faces]`: rows per analysed frame (called by cli/predict.py when
an input is a video; the photos among the inputs are then frames of their own)."""

from __future__ import annotations

import sys

from emorec.cli.predict import print_skipped


def run_predict_video(args, predictor, paths, failures, device: str) -> int:
    from tqdm import tqdm

    from emorec.data.inputs import Failure
    from emorec.errors import EmorecError
    from emorec.video.frames import VideoFrames, is_video
    from emorec.video.annotate import VideoAnnotator
    from emorec.video.predict import FrameRowWriter, VideoPrediction, format_row

    if args.smooth < 0:
        raise EmorecError(f"--smooth must be >= 0 seconds, got {args.smooth}")
    detector = None
    if args.faces:
        from emorec.faces.detect import create_detector

        detector = create_detector(args.detector, device)
    fps = None if args.every else args.fps
    writer = FrameRowWriter(args.output, args.top_k, args.faces, args.smooth > 0) if args.output else None
    width = min(60, max((len(str(p)) for p in paths), default=10))
    frames = rows = 0
    stopped = []
    try:
        for path in paths:
            prediction = VideoPrediction(predictor, path, detector, fps=fps, every=args.every, top_k=args.top_k,
                                         margin=args.margin, smooth_s=args.smooth, detect_every=args.detect_every)
            total = VideoFrames(path, fps, args.every).expected() if is_video(path) else 1
            annotator = VideoAnnotator(args.annotate, path, list(predictor.labels)) if args.annotate and is_video(path) else None
            with tqdm(total=total, unit="frame", desc=path.name[:30], file=sys.stderr, leave=False,
                      disable=not sys.stderr.isatty()) as bar:

                def on_frame(frame, frame_rows, bar=bar, annotator=annotator):
                    bar.update(1)
                    if annotator:
                        annotator.add(frame, frame_rows)

                try:
                    for row in prediction.rows(on_frame=on_frame):
                        if writer:
                            writer.write(row)
                        else:
                            print(format_row(row, width))
                except EmorecError as e:  # not a video or image at all: skipped and counted, the rest go on
                    failures.append(Failure(str(path), str(e)))
                    continue
            if annotator:
                drawn = [str(p) for p in annotator.close() if p]
                print(f"annotated: {', '.join(drawn)}", file=sys.stderr)
            frames += prediction.stats.frames
            rows += prediction.stats.rows
            if prediction.stats.stopped:
                stopped.append(f"{path}: {prediction.stats.stopped}; the rows of the frames before are kept")
    finally:
        if writer:
            writer.close()
    for line in stopped:
        print(line, file=sys.stderr)
    print_skipped(failures)
    where = f" to {args.output}" if args.output else ""
    print(f"analysed {frames} frames of {len(paths) - len(failures)} inputs, {rows} rows{where}; "
          f"{len(stopped)} broken videos; skipped {len(failures)} unreadable", file=sys.stderr)
    return 0 if frames else 2
