"""CLI: `emorec predict` (label images, or every face in them, with a trained model)."""

from __future__ import annotations

import sys

from emorec.data.views import TTA_MODES


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict emotions for images and videos with a run directory, checkpoint or exported .onnx model",
        description="MODEL: run directory, .pt checkpoint or .onnx file. INPUT: image or video files, folders (recursive) "
                    "or CSV manifests with a 'path' column. Under torchrun (`torchrun --nproc-per-node N -m emorec "
                    "predict ... --output FILE`) each rank predicts every N-th image into FILE.parts/ and rank 0 "
                    "merges them into FILE in input order; the same command started again after a kill resumes.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("inputs", metavar="INPUT", nargs="*")
    p.add_argument("--inputs-from", metavar="FILE",
                   help="also predict the images listed in FILE: one path per line, or a CSV with a 'path' column "
                        "(relative paths are relative to FILE's folder); no folder is walked")
    p.add_argument("--output", metavar="FILE", help="write FILE.csv or FILE.jsonl instead of printing")
    p.add_argument("--top-k", type=int, default=3, help="labels per image (default: 3)")
    p.add_argument("--tta", action="store_true",
                   help="average over views (slower, usually a little better), in the model's eval.tta_mode")
    p.add_argument("--tta-mode", choices=TTA_MODES,
                   help="average over views in this mode (implies --tta): views (flip and zoomed crops) or "
                        "ten-crop (centre + corners of the resized image and their mirrors)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--fp32", action="store_true",
                   help="for a run with an INT8 model (emorec export --quantize int8): run the original model instead")
    p.add_argument("--device", default="auto", help="for PyTorch models: auto, cpu, cuda or cuda:N")
    p.add_argument("--faces", action="store_true",
                   help="photos for a face-trained model: detect every face, classify each crop; one row per face "
                        "(path, face, x1, y1, x2, y2, det_score, labels...), label no_face for a photo without one")
    p.add_argument("--detector", default="mtcnn", help="face detector for --faces: mtcnn (default) or haar")
    p.add_argument("--margin", type=float, default=0.2, help="with --faces: margin around each face box, as a share of its side (default: 0.2)")
    p.add_argument("--annotate", metavar="DIR", help="with --faces: write a copy of each photo with boxes and labels drawn into DIR; for a video, "
                        "DIR/NAME.annotated.mp4 (the analysed frames, H.264) and DIR/NAME.timeline.png")
    video = p.add_argument_group("video inputs (mp4, mov, mkv, webm, avi): one row per face (or frame) per analysed frame")
    video.add_argument("--fps", type=float, default=4.0, help="analysed frames per second of video (default: 4)")
    video.add_argument("--every", type=int, help="analyse every N-th frame instead of --fps")
    video.add_argument("--detect-every", type=int, default=1, metavar="N",
                       help="with --faces: run the face detector on every N-th analysed frame only and reuse its "
                            "boxes in between (faster; boxes lag up to N / fps seconds; default: 1, every frame)")
    video.add_argument("--smooth", type=float, default=0.0, metavar="SECONDS",
                       help="average each face track's probabilities over this trailing window; labels from the "
                            "averages, the raw ones kept in raw_label_* columns (default: 0, off)")
    p.set_defaults(func=run_predict)


def print_skipped(failures) -> None:
    """One `skipped PATH: REASON` line on stderr per unreadable input, in order (predict and
    predict --faces)."""
    for failure in failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)


def run_predict(args) -> int:
    import os
    from pathlib import Path

    from emorec.data.inputs import Failure, collect_inputs, is_video, read_input_list
    from emorec.errors import EmorecError
    from emorec.prediction_rows import PredictionWriter, format_prediction
    from emorec.serving.predict import open_predictor, predict_paths
    from emorec.shards import torchrun_world_size

    if args.top_k < 1:
        raise EmorecError(f"--top-k must be at least 1, got {args.top_k}")
    if args.output and Path(args.output).suffix.lower() not in (".csv", ".jsonl"):
        raise EmorecError(f"--output {args.output} must end in .csv or .jsonl")
    if args.annotate and not args.faces:
        raise EmorecError("--annotate draws face boxes: add --faces (and a face-trained model)")
    if not 0.0 <= args.margin <= 2.0:
        raise EmorecError(f"--margin must be between 0 and 2 (a share of the face box's side), got {args.margin}")
    if not args.inputs and not args.inputs_from:
        raise EmorecError("no inputs: pass image files, folders or CSVs, or --inputs-from FILE")
    paths, failures = collect_inputs(args.inputs)
    if args.inputs_from:
        paths += read_input_list(args.inputs_from)
    if not paths and not failures:
        named = " ".join([*args.inputs, *([args.inputs_from] if args.inputs_from else [])])
        raise EmorecError(f"no images found in {named}; pass image files, folders or a CSV with a 'path' column")
    if (world := torchrun_world_size(os.environ)) is not None:
        return run_predict_ranks(args, paths, failures, world)
    predictor = open_predictor(args.model, args.device, int8=not args.fp32)
    print(f"model: {predictor.description}", file=sys.stderr)
    if any(is_video(p) for p in paths):
        from emorec.cli.video import run_predict_video

        return run_predict_video(args, predictor, paths, failures, str(getattr(predictor, "device", "cpu")))
    if args.faces:
        from emorec.cli.faces import run_predict_faces

        return run_predict_faces(args, predictor, paths, failures, str(getattr(predictor, "device", "cpu")))
    writer = PredictionWriter(args.output, args.top_k) if args.output else None
    width = min(60, max((len(str(p)) for p in paths), default=10))
    written = 0
    try:
        for item in predict_paths(predictor, paths, args.top_k, args.tta_mode or args.tta, args.batch_size):
            if isinstance(item, Failure):
                failures.append(item)
                continue
            written += 1
            if writer:
                writer.write(item)
            else:
                print(format_prediction(item, width))
    finally:
        if writer:
            writer.close()
    print_skipped(failures)
    where = f" to {args.output}" if args.output else ""
    print(f"predicted {written} images{where}; skipped {len(failures)} unreadable", file=sys.stderr)
    return 0 if written else 2


def run_predict_ranks(args, paths, failures, world: int) -> int:
    """`emorec predict` as one of `world` torchrun ranks: this rank's shard into OUTPUT.parts/,
    rank 0 merges and reports for the whole job."""
    from pathlib import Path

    from emorec.data.inputs import is_video
    from emorec.errors import EmorecError
    from emorec.serving.distributed_predict import parts_folder_of, predict_sharded
    from emorec.serving.predict import open_predictor
    from emorec.shards import Shard, throughput_lines
    from emorec.training.distributed import cleanup, init_distributed

    # Face rows and video frames are not one record per input, which is what the parts resume by.
    if args.faces:
        raise EmorecError(f"--faces is not supported under torchrun ({world} ranks); run it without torchrun")
    if video := next((p for p in paths if is_video(p)), None):
        raise EmorecError(f"video inputs ({video}) are not supported under torchrun ({world} ranks); "
                          "run them without torchrun")
    if not args.output:
        raise EmorecError(f"under torchrun ({world} ranks) predictions go to a file: add --output FILE.csv or FILE.jsonl")
    info = init_distributed(args.device)  # cuda:LOCAL_RANK where CUDA is, NCCL there and gloo on the CPU
    try:
        predictor = open_predictor(args.model, str(info.device), int8=not args.fp32)
        if info.is_main:
            print(f"model: {predictor.description}; torchrun ranks: {world}", file=sys.stderr)
        result = predict_sharded(predictor, paths, args.output, Shard(info.rank, info.world_size),
                                 model_id={"model": str(Path(args.model).resolve()), "fp32": args.fp32},
                                 top_k=args.top_k, tta=args.tta_mode or args.tta, batch_size=args.batch_size)
    finally:
        cleanup()
    if not info.is_main:
        return 0
    if result.resumed:
        print(f"resumed: {result.resumed} rows were already in {parts_folder_of(args.output)}", file=sys.stderr)
    print("\n".join(throughput_lines(result.speeds)), file=sys.stderr)
    skipped = failures + result.failures
    print_skipped(skipped)
    print(f"predicted {result.written} images to {args.output}; skipped {len(skipped)} unreadable", file=sys.stderr)
    return 0 if result.written else 2
