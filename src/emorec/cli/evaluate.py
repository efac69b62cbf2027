"""CLI: `emorec evaluate RUN_DIR`: metrics, pictures and a report for a trained run."""

from __future__ import annotations

import argparse

from emorec.data.views import TTA_MODES


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained run on its test split or another dataset; write report.md, metrics.json and pictures",
        description="Evaluate the best checkpoint of RUN_DIR. Results go to RUN_DIR/eval/<split or data name>/ "
                    "(runs/NAME/eval/... for a built-in model).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `emorec train`, or a built-in model's name "
                                                     "(`emorec models`)")
    p.add_argument("--split", default=None, help="split of the run's manifest.csv to evaluate (default: test); with --data, "
                                                 "only that split of the data's split column")
    p.add_argument("--data", metavar="SOURCE", help="evaluate on another dataset (folder or CSV) instead, all of it unless --split "
                                                    "is given; labels are matched by name")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="also report test-time augmentation, in the run's eval.tta_mode (default: the run's eval.tta)")
    p.add_argument("--tta-mode", choices=TTA_MODES,
                   help="also report TTA in this mode: views (the run's flip and zoomed crops) or ten-crop "
                        "(centre + 4 corner crops of the resized image and their mirrors)")
    p.add_argument("--output", metavar="DIR", help="write here instead of RUN_DIR/eval/<name>/")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's eval.batch_size)")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: the run's data.num_workers)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--faces", action="store_true",
                   help="photos for a face-trained run: classify each photo by its largest face (photos without a face are skipped)")
    p.add_argument("--detector", default="mtcnn", help="face detector for --faces: mtcnn (default) or haar")
    p.set_defaults(func=run_evaluate)


def format_summary(result) -> str:
    rows = [("accuracy", "accuracy"), ("macro F1", "macro_f1"), ("weighted F1", "weighted_f1"), ("top-2 accuracy", "top2_accuracy"), ("ECE", "ece")]
    header = f"{'metric':<16}{'single view':>12}" + (f"{'TTA':>10}" if result.metrics_tta else "")
    lines = [header]
    for title, key in rows:
        line = f"{title:<16}{result.metrics[key]:>12.4f}"
        if result.metrics_tta:
            line += f"{result.metrics_tta[key]:>10.4f}"
        lines.append(line)
    return "\n".join(lines)


def run_evaluate(args) -> int:
    from emorec.evaluation.evaluate import evaluate_run

    result = evaluate_run(
        args.run_dir, split=args.split, data=args.data,
        tta=args.tta_mode if args.tta_mode and args.tta is not False else args.tta, output=args.output,
        device=args.device, batch_size=args.batch_size, num_workers=args.workers,
        faces=args.detector if args.faces else None,
    )
    print(f"evaluated {result.metrics['num_samples']} images")
    print(format_summary(result))
    print(f"report:  {result.report_path}")
    print(f"metrics: {result.metrics_path}")
    return 0
