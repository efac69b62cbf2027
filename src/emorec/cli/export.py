"""CLI: `emorec export` (ONNX / TorchScript, verified against PyTorch)."""

from __future__ import annotations


def register(sub) -> None:
    e = sub.add_parser(
        "export",
        help="export a run's model to ONNX and/or TorchScript, verified against PyTorch",
        description="Writes RUN_DIR/export/model.onnx (dynamic batch), model.torchscript.pt and model.json (labels, preprocessing).",
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="run directory or checkpoint file")
    e.add_argument("--format", choices=["onnx", "torchscript", "all"], default="onnx")
    e.add_argument("--output", metavar="DIR", help="write here instead of RUN_DIR/export/")
    e.add_argument("--quantize", choices=["int8"],
                   help="also write model.int8.onnx: ONNX Runtime static quantization (QDQ, per-channel), calibrated on "
                        "train images; refused unless it agrees with fp32 on >= 98%% of val top-1 labels and loses <= 1 "
                        "point of macro-F1")
    e.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted |logit difference| (default: 1e-3)")
    e.set_defaults(func=run_export)


def run_export(args) -> int:
    from emorec.serving.export import FORMATS, export_run

    formats = FORMATS if args.format == "all" else (args.format,)
    results = export_run(args.run_dir, formats, args.output, args.tolerance, quantize=args.quantize)
    for result in results:
        print(result.line())
    diff = results[0].extra.get("preprocess_max_abs_diff")
    if diff is not None:
        print(f"PIL+numpy preprocessing vs torchvision: max |diff| {diff:.2e}")
    return 0
