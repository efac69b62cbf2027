"""CLI: `emorec fit SOURCE --budget 30m`: the best model for a dataset within a time budget."""

from __future__ import annotations


def register(sub) -> None:
    from emorec.fit.candidates import HEAD_EPOCHS, HEAD_KINDS

    p = sub.add_parser(
        "fit", help="search backbones, features and heads by validation within a time budget",
        description="Extracts features once per backbone (cached), tries the linear probe, linear / MLP / attention + "
                    "MLP heads at two regularisation strengths on last-level and multi-level features, each backbone alone "
                    "and all of them together (a backbone group and an ensemble of probes), then, where the "
                    "budget allows, an LP-FT fine-tune of the best and full fine-tunes at two input sizes (stopped "
                    "early by successive halving when behind); chooses by validation macro-F1 (probes by 5-fold "
                    "cross-validation over train + val, then refit on both) and reports the "
                    "chosen model's test score only. Writes OUTPUT/leaderboard.csv and OUTPUT/best/ (a run directory "
                    "for evaluate, predict and export); the candidates are trials of an Optuna study in OUTPUT/study.db. Run it "
                    "again with the same --output to resume. Under torchrun (`torchrun --nproc-per-node N -m emorec fit "
                    "...`) every rank extracts its share of the features, then rank 0 searches.")
    p.add_argument("source", help="dataset folder or CSV manifest")
    p.add_argument("--budget", default="30m", help="time for everything, extraction included, counting what earlier "
                                                   "runs in the same --output spent: 30m, 1h, 90s, 1800 (default 30m)")
    p.add_argument("--backbone", dest="backbones", action="append", default=[], metavar="NAME[=WEIGHTS_FILE]",
                   help="a backbone to try (repeatable); a local weights file works offline (default: the config's "
                        "backbone with timm's hub weights)")
    p.add_argument("--random-init", action="store_true", help="backbones without pretrained weights (smoke runs)")
    p.add_argument("--output", metavar="DIR", help="leaderboard.csv, best/, candidates/ (default runs/fit-<dataset>)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--views", type=int, default=2, help="augmented views cached per training image (default 2)")
    p.add_argument("--heads", default=",".join(HEAD_KINDS),
                   help=f"candidate heads, comma-separated (default {','.join(HEAD_KINDS)})")
    p.add_argument("--head-epochs", type=int, default=HEAD_EPOCHS,
                   help=f"epochs of each trained head, with early stopping (default {HEAD_EPOCHS})")
    p.add_argument("--no-finetune", action="store_true",
                   help="skip the fine-tunes: the LP-FT of the best candidate and the full fine-tunes")
    p.add_argument("--sizes", default=None, metavar="PX,PX",
                   help="input sizes of the full fine-tunes, e.g. 160,224 (default: 64,96 for images of at most "
                        "64 px, else 160,224)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="an Optuna RDB URL (e.g. postgresql://host/db) shared by several emorec fit processes, each "
                        "running candidates no other has started (default sqlite in OUTPUT/study.db)")
    p.add_argument("--finetune-epochs", type=int, default=10, help="at most this many LP-FT epochs (default 10)")
    p.add_argument("--no-test", action="store_true", help="do not score the chosen model on the test split")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=1, help="image decoding processes")
    p.add_argument("--cache-dir", default=None, help="feature cache root (default .cache/features)")
    p.add_argument("--config", metavar="FILE", help="base YAML config (splits, loss, ...; default: the recipe)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override base config keys, e.g. --set data.val_fraction=0.15")
    p.set_defaults(func=run_fit)


def run_fit(args) -> int:
    import os
    from pathlib import Path

    from emorec.api import fit
    from emorec.config import load_config
    from emorec.errors import EmorecError
    from emorec.fit import BackboneChoice
    from emorec.fit.budget import Budget, parse_duration
    from emorec.shards import torchrun_world_size

    if args.image_size < 16 or args.views < 0 or args.workers < 0 or args.finetune_epochs < 1 or args.head_epochs < 1:
        raise EmorecError("emorec fit: --image-size must be >= 16, --views and --workers >= 0, --finetune-epochs and "
                          "--head-epochs >= 1")
    try:
        sizes = tuple(int(x) for x in args.sizes.split(",") if x.strip()) if args.sizes is not None else None
    except ValueError:
        raise EmorecError(f"emorec fit: --sizes {args.sizes}: expected pixel sizes separated by commas, e.g. "
                          "160,224") from None
    if sizes is not None and any(size < 16 for size in sizes):
        raise EmorecError(f"emorec fit: --sizes {args.sizes}: each size must be >= 16")
    cfg = load_config(args.config, args.overrides)
    backbones = [BackboneChoice.parse(text, args.random_init) for text in args.backbones]
    if not backbones and args.random_init:
        backbones = [BackboneChoice(cfg.model.backbone, None, False)]
    source = Path(args.source)
    name = (source.parent.name if source.is_file() else source.name) or "data"
    output = args.output or str(Path(cfg.train.output_dir) / f"fit-{name}")
    budget = Budget(parse_duration(args.budget))  # started here: a torchrun extraction is part of it
    if torchrun_world_size(os.environ) is not None:
        from emorec.fit.ranks import extract_on_ranks

        choices = backbones or [BackboneChoice(cfg.model.backbone, cfg.model.weights, cfg.model.pretrained)]
        if not extract_on_ranks(args.source, output, choices, cfg, image_size=args.image_size, views=args.views,
                                cache_dir=args.cache_dir, device=args.device, workers=args.workers, budget=budget):
            return 0  # rank 0 searches; this rank's share of the features is written
    result = fit(args.source, output, budget, backbones or None, config=cfg, image_size=args.image_size,
                 views=args.views, heads=tuple(h.strip() for h in args.heads.split(",") if h.strip()),
                 head_epochs=args.head_epochs, finetune=not args.no_finetune, finetune_epochs=args.finetune_epochs,
                 test=not args.no_test, cache_dir=args.cache_dir, device=args.device, workers=args.workers,
                 storage=args.storage, finetune_sizes=sizes)
    best = result.best
    done = sum(r["status"] == "done" and r["kind"] != "extract" for r in result.rows)
    skipped = sum(r["status"] == "skipped" for r in result.rows)
    pruned = sum(r["status"] == "pruned" for r in result.rows)
    print(f"leaderboard      {result.output / 'leaderboard.csv'} ({done} candidates, {pruned} pruned, "
          f"{skipped} skipped)")
    cv = f"  cross-validated macro-F1 {float(best['cv_macro_f1']):.4f}" if best.get("cv_macro_f1") else ""
    print(f"chosen           {best['candidate']}  val macro-F1 {float(best['val_macro_f1']):.4f}  "
          f"val accuracy {float(best['val_accuracy']):.4f}{cv}")
    if result.folds:
        print(f"cross-validation {result.folds} folds over the train + val images (probes)")
    print(f"best model       {result.best_dir}")
    print(f"time             {result.seconds:.0f} s (budget {args.budget})")
    if result.test is not None:
        t = result.test
        tta = (f"; with TTA {t['tta_macro_f1']:.4f} / {t['tta_accuracy']:.4f}" if "tta_macro_f1" in t else "")
        print(f"test (chosen)    macro-F1 {t['macro_f1']:.4f}  accuracy {t['accuracy']:.4f}  on {t['num_samples']} "
              f"images{tta}")
    return 0
