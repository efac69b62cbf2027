"""CLI: `emorec models` (list the built-in models) and `emorec models build NAME` (re-create one)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "models", help="list the built-in models (faces, photos), or re-create one with `models build NAME`",
        description="Built-in models ship with emorec and work offline: pass a name wherever a RUN is taken, e.g. "
                    "`emorec predict faces photo.jpg --faces`, `emorec serve photos`, `emorec explain photos photo.jpg`.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    build = actions.add_parser("build", help="re-create a built-in model from the shared data with its card's commands "
                                             "(hours on a CPU; resumable)")
    build.add_argument("name", metavar="NAME")
    build.add_argument("--shared", default="../shared", help="folder holding datasets/ and weights/ (default ../shared)")
    build.add_argument("--work", default="runs/builtin", help="where the training runs go (default runs/builtin)")
    build.add_argument("--no-train", action="store_true",
                       help="store and measure the run the commands left, without running them again")
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    if getattr(args, "action", None) == "build":
        from emorec.zoo.build import build_builtin

        card = build_builtin(args.name, args.shared, args.work, train=not args.no_train)
        print(f"model card: {card}")
        return 0
    from emorec.zoo.card import headline
    from emorec.zoo.registry import list_builtin

    rows = []
    for model in list_builtin():
        try:
            card = model.card()
            model.check()
            rows.append((model.name, ", ".join(card["labels"]), f"{card['checkpoint']['bytes'] / 1e6:.1f} MB",
                         headline(card), str(model.card_path)))
        except Exception as e:  # noqa: BLE001 -- a damaged model is listed with its problem, the others still
            rows.append((model.name, "-", "-", f"unusable: {e}", str(model.card_path)))
    for name, labels, size, figure, card_path in rows:
        print(f"{name}\n  labels   {labels}\n  size     {size}\n  accuracy {figure}\n  card     {card_path}")
    return 0
