"""`emorec predict --faces`: one row per face, optional annotated copies (called by cli/predict.py)."""

from __future__ import annotations

import sys

from emorec.cli.predict import print_skipped


def run_predict_faces(args, predictor, paths, failures, device: str) -> int:
    from emorec.data.inputs import Failure
    from emorec.faces.annotate import AnnotationWriter
    from emorec.faces.detect import create_detector
    from emorec.faces.predict import FacePredictionWriter, format_faces, predict_face_paths

    detector = create_detector(args.detector, device)
    writer = FacePredictionWriter(args.output, args.top_k) if args.output else None
    annotations = AnnotationWriter(args.annotate, predictor.labels) if args.annotate else None
    width = min(60, max((len(str(p)) for p in paths), default=10))
    photos = faces = 0
    try:
        for item in predict_face_paths(predictor, paths, detector, args.top_k, args.margin, args.tta):
            if isinstance(item, Failure):
                failures.append(item)
                continue
            photos += 1
            faces += len(item.faces)
            if writer:
                writer.write(item)
            else:
                print("\n".join(format_faces(item, width)))
            if annotations:
                annotations.write(item.path, item.image, item.faces)
    finally:
        if writer:
            writer.close()
    print_skipped(failures)
    where = f" to {args.output}" if args.output else ""
    drawn = f"; annotated copies in {args.annotate}" if args.annotate else ""
    print(f"found {faces} faces in {photos} photos{where}{drawn}; skipped {len(failures)} unreadable", file=sys.stderr)
    return 0 if photos else 2
