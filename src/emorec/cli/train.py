"""CLI: `emorec train`, `emorec check`, `emorec demo`."""

from __future__ import annotations

from pathlib import Path


def _add_config_args(p, config_help: str = "YAML config (default: the built-in recipe)") -> None:
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set train.epochs=10 data.batch_size=64")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model, or continue a run with --resume",
                       description="Train with a YAML config and --set overrides; writes <train.output_dir>/"
                                   "<train.name>/. Under `torchrun --nproc-per-node N -m emorec train` it runs DDP.")
    _add_config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run (its config.yaml; --set train.epochs=N "
                                                       "extends it)")
    p.add_argument("--head-only", action="store_true",
                   help="train attention + head on cached features (same as --set train.head_only=true)")
    p.set_defaults(func=run_train)

    p = sub.add_parser("check", help="build the model and run a few real images forward and backward",
                       description="Validate a config before a long run: model, pipeline, loss and gradients.")
    _add_config_args(p)
    p.add_argument("--data", metavar="SOURCE", help="dataset folder or CSV (overrides data.source)")
    p.set_defaults(func=run_check)

    p = sub.add_parser("demo", help="a short run of configs/demo.yaml on a real dataset, or --builtin: the built-in "
                                    "models on sample photos",
                       description="With --data: a short training run of the recipe that suits the data (tf_efficientnet_lite0 "
                                   "from the weights in ../shared); prints validation accuracy, macro-F1 and the run "
                                   "directory. With --builtin: no data needed; the built-in models label the faces and "
                                   "the whole photos of the sample photos scikit-image and matplotlib ship, with Grad-CAM "
                                   "overlays (OUTPUT/demo.png, OUTPUT/report.md).")
    p.add_argument("--data", metavar="SOURCE", help="dataset folder or CSV, e.g. ../shared/datasets/emotion6")
    p.add_argument("--builtin", action="store_true", help="run the built-in models on the sample photos instead of training")
    p.add_argument("--output", default="runs/demo-builtin", help="with --builtin: where demo.png and report.md go "
                                                                 "(default runs/demo-builtin)")
    _add_config_args(p, "demo config (default: configs/demo.yaml of the repository)")
    p.set_defaults(func=run_demo)


def run_train(args) -> int:
    from emorec.config import load_config
    from emorec.errors import EmorecError
    from emorec.api import train

    if args.resume:
        if args.config:
            raise EmorecError("--resume takes the run's own config.yaml; drop --config (use --set to change keys)")
        resume = Path(args.resume)
        run_dir = resume if resume.is_dir() else resume.resolve().parent.parent
        if not (run_dir / "config.yaml").is_file():
            raise EmorecError(f"{run_dir} is not a run directory (no config.yaml); pass the folder `emorec train` wrote")
        cfg = load_config(run_dir / "config.yaml", args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    if args.head_only:
        cfg.train.head_only = True
    result = train(cfg, resume=args.resume)
    if result.is_main:
        _print_result(result)
    return 0


def _print_result(result) -> None:
    best = next((r for r in result.history if int(r["epoch"]) == result.best_epoch), result.final)
    if best:
        print(f"best epoch       {result.best_epoch}")
        print(f"val accuracy     {float(best['val_accuracy']):.4f}")
        print(f"val macro-F1     {float(best['val_macro_f1']):.4f}")
    print(f"epochs           {result.epochs_completed}{' (stopped early)' if result.stopped_early else ''}")
    print(f"wall time        {result.wall_time_s:.0f} s")
    print(f"run dir          {result.run_dir}")


def run_check(args) -> int:
    from emorec.config import load_config
    from emorec.api import check

    cfg = load_config(args.config, args.overrides)
    if args.data:
        cfg.data.source = args.data
    report = check(cfg)
    params, ds = report["params"], report["dataset"]
    rows = [
        ("device", report["device"]),
        ("backbone", report["backbone"]),
        ("input", " x ".join(map(str, report["input_shape"]))),
        ("feature map", " x ".join(map(str, report["feature_map_shape"]))),
        ("logits", " x ".join(map(str, report["logits_shape"]))),
        ("loss", f"{report['loss']:.4f}"),
        ("grad norm", f"{report['grad_norm']:.4f}"),
        ("parameters", f"{params['total']:,} total, {params['trainable']:,} trainable, {params['size_mb']:.1f} MB"),
        ("dataset", f"{ds['source']}: {ds['images']} images, "
                    + ", ".join(f"{k} {v}" for k, v in ds["splits"].items())),
        ("classes", ", ".join(f"{k} {v}" for k, v in ds["classes"].items())),
    ]
    for name, value in rows:
        print(f"{name:<12} {value}")
    print("check passed: forward and backward ran on real images")
    return 0


def run_demo(args) -> int:
    from emorec.api import demo

    if args.builtin:
        from emorec.errors import EmorecError
        from emorec.zoo.demo import run_builtin_demo

        if args.data:
            raise EmorecError("--builtin runs the shipped models on sample photos; drop --data (or drop --builtin to train)")
        shown = run_builtin_demo(args.output)
        for photo in shown.photos:
            faces = ", ".join(f["top_k"][0]["label"] for f in photo.faces) or "no face"
            print(f"{photo.path.name:<18} faces: {faces:<24} photo: {photo.emotions[0][0]} {photo.emotions[0][1]:.0%}")
        print(f"picture {shown.picture}\nreport  {shown.report}\ntime    {shown.seconds:.1f} s")
        return 0
    result = demo(args.data, args.overrides, args.config)
    if result.is_main:
        _print_result(result)
    return 0
