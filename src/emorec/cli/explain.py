"""CLI: `emorec explain MODEL INPUT... --output DIR`: Grad-CAM overlays and a grid of them."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="draw Grad-CAM heat maps: which regions of each image made the model choose its class",
        description="MODEL: run directory, .pt checkpoint or a built-in model's name (ONNX models cannot be explained). INPUT: image files, "
                    "folders (recursive) or CSV manifests with a 'path' column. Writes DIR/<image>_<class>.png "
                    "(overlay at the image's size) and DIR/explanations.png (a grid of image and overlay pairs).",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("inputs", metavar="INPUT", nargs="+")
    p.add_argument("--output", metavar="DIR", required=True, help="folder for the overlays and the grid")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class instead of the predicted one")
    p.add_argument("--faces", action="store_true", help="explain each detected face's crop (for face-trained runs on photos)")
    p.add_argument("--detector", default="mtcnn", help="face detector for --faces: mtcnn (default) or haar")
    p.add_argument("--alpha", type=float, default=0.45, help="opacity of the heat map over the image (default: 0.45)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run_explain)


def run_explain(args) -> int:
    from emorec.errors import EmorecError
    from emorec.explain.explain import explain_images
    from emorec.devices import resolve_device

    if not 0.0 <= args.alpha <= 1.0:
        raise EmorecError(f"--alpha must be between 0 and 1, got {args.alpha}")
    result = explain_images(args.model, args.inputs, args.output, args.class_name, resolve_device(args.device),
                            faces=args.detector if args.faces else None, alpha=args.alpha)
    width = min(60, max((len(e.path) for e in result.explanations), default=10))
    for e in result.explanations:
        face = f" face {e.face}" if e.face else ""
        print(f"{e.path + face:<{width}}  predicted {e.predicted:<12} {e.probability:6.1%}  heat map of {e.explained:<12} {e.output}")
    for failure in result.failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
    where = f"; grid {result.grid}" if result.grid else ""
    print(f"explained {len(result.explanations)} images{where}; skipped {len(result.failures)}", file=sys.stderr)
    return 0 if result.explanations else 2
