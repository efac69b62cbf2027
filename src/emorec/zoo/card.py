"""MODEL_CARD.md from a built-in model's card.json and its recipe (Mitchell et al., 2019; the
Hugging Face model card layout: details, uses, limits, data, evaluation, how to reproduce).

Every figure in the Markdown comes from card.json, which `zoo.build` wrote from measurements;
rendering is a pure function, so a test can check the shipped MODEL_CARD.md is exactly this
rendering of the shipped card.json.
"""

from __future__ import annotations

import shlex
from typing import Any

from emorec.zoo.recipes import Recipe


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def headline(card: dict[str, Any]) -> str:
    """One line: the checked figure, with TTA when measured."""
    check = card["check"]
    tta = check.get("tta")
    figure = (f"{_pct(tta['accuracy'])}% top-1 ({tta['mode']}), {_pct(check['accuracy'])}% one view"
              if tta else f"{_pct(check['accuracy'])}% top-1, macro-F1 {_pct(check['macro_f1'])}")
    return f"{figure} on {check['short']}"


def _scores_table(card: dict[str, Any]) -> list[str]:
    labels = card["labels"]
    rows = []
    for entry in [card["check"], *card.get("extra", [])]:
        rows.append((entry["description"], "one view", entry))
        if entry.get("tta"):
            rows.append((entry["description"], entry["tta"]["mode"], entry["tta"]))
    lines = ["| images | views | n | top-1 % | macro-F1 % | ECE | " + " | ".join(f"F1 {n}" for n in labels) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(labels)]
    for description, views, m in rows:
        per_class = " | ".join(_pct(m["per_class_f1"][n]) for n in labels)
        lines.append(f"| {description} | {views} | {m['images']} | {_pct(m['accuracy'])} | {_pct(m['macro_f1'])} | "
                     f"{m['ece']:.3f} | {per_class} |")
    return lines


def render_card(card: dict[str, Any], recipe: Recipe) -> str:
    build, ckpt, speed = card["build"], card["checkpoint"], card["speed"]
    commands = ["emorec " + shlex.join(argv) for argv in build["commands"]]
    lines = [
        f"# Model card: `{card['name']}`",
        "",
        f"{recipe.title}. Built into emorec: `emorec predict {card['name']} PHOTO"
        + (" --faces" if card["name"] == "faces" else "") + f"`, `emorec serve {card['name']}`, "
        f"`emorec explain {card['name']} PHOTO`, `emorec evaluate {card['name']} --data DATA`.",
        "",
        f"**Headline: {headline(card)}.**",
        "",
        "## Model details",
        f"- Labels ({len(card['labels'])}): {', '.join(card['labels'])}",
        f"- Input: {recipe.input}",
        f"- Architecture: {card['model']['description']}; {card['model']['parameters']:,} parameters; input "
        f"{card['model']['image_size']} px",
        f"- File: `{ckpt['path']}`, {ckpt['bytes'] / 1e6:.1f} MB ({ckpt['dtype']}), SHA-256 `{ckpt['sha256'][:16]}...`",
        f"- Size: {recipe.size_note}",
        f"- Training: {recipe.training_note}",
        f"- Built by emorec {build['emorec']} at commit `{build['commit']}` on {build['date']} "
        f"({build['machine']}); training took {build['train_seconds'] / 60:.0f} min.",
        "",
        "## Intended use",
        recipe.intended_use,
        "",
        "## Not for",
        *[f"- {text}" for text in recipe.not_for],
        "",
        "## Limits and known biases",
        *[f"- {text}" for text in recipe.limits],
        "",
        "## Training data",
        recipe.data,
        "",
        f"Split: {recipe.split}",
        "",
        "## Evaluation",
        "Measured by `emorec models build` on the stored weights, through `emorec predict`'s own code path "
        "(top-1 and macro-F1 in %, ECE = expected calibration error over 15 bins, F1 per class in %). "
        f"`tests/zoo/test_builtin_cards.py` re-scores the first row from `../shared` on every test run.",
        "",
        *_scores_table(card),
        "",
        *([f"The search's own estimate for the chosen model: cross-validated macro-F1 "
           f"{_pct(card['selection']['cv_macro_f1'])} ({card['selection']['folds']} folds over train + val, before "
           f"the refit on {card['selection']['refit']}).", ""] if card.get("selection") else []),
        f"Speed (`emorec predict`'s PyTorch path, preprocessing included, {speed['threads']} CPU threads, "
        f"{speed['image_side']} px inputs, {build['machine']}, load average {speed['load_average']} while measuring): "
        f"{speed['images_per_s_batch1']:.0f} images/s at batch 1, {speed['images_per_s_batch16']:.0f} images/s at batch 16.",
        "",
        "## How to reproduce",
        "From the repository root, with the shared data in `../shared`:",
        "",
        "```",
        f"emorec models build {card['name']}",
        "```",
        "",
        "which runs",
        "",
        "```",
        *commands,
        "```",
        "",
        "then stores the chosen checkpoint as float16, measures it and writes this card. Times depend on the "
        "machine; a search (`emorec fit`) with a time budget may choose differently on another one.",
        "",
        "## References",
        *[f"- {text}" for text in recipe.references],
        "",
    ]
    return "\n".join(lines)
