"""`emorec fit`: a search by validation macro-F1 within a budget, on tiny data with a random test
backbone. The chosen model is a normal run directory; the test split is read once, at the end;
finished candidates are never run again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emorec.errors import EmorecError
from emorec.fit import BackboneChoice, fit
from emorec.fit.budget import Budget, parse_duration
from emorec.fit.leaderboard import Leaderboard
from emorec.fit.probe import fit_logistic_regression

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import cache, data, make_images, one_thread  # noqa: E402,F401 (fixtures)
from tiny_search import (BACKBONE, TINY, leaderboard, photos, small_grid_in_a_temporary_folder,  # noqa: E402,F401 (fixtures)
                         two_backbones_with_weights)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_chooses_by_validation_and_reads_the_test_split_only_for_the_chosen_model(photos, tmp_path, monkeypatch):
    """The probe branch of the leader rule, forced: no trainer run can be a whole macro-F1 point
    ahead on val, so the best cross-validated probe must lead and be refit on train + val.
    (The other branch: the next test.)"""
    import emorec.data.dataset as dataset
    import emorec.data.imageio as imageio
    import emorec.evaluation.evaluate as evaluate
    import emorec.fit.search as search
    from emorec.data.manifest import read_manifest
    from emorec.run_model import load_run_model

    reads, phase = [], {"test_pass": False}
    real_load, real_evaluate = imageio.load_rgb, evaluate.evaluate_run

    def spying_load(path, *args, **kwargs):
        reads.append((str(path), phase["test_pass"]))
        return real_load(path, *args, **kwargs)

    def final_evaluation(*args, **kwargs):
        phase["test_pass"] = True
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(imageio, "load_rgb", spying_load)
    monkeypatch.setattr(dataset, "load_rgb", spying_load)
    monkeypatch.setattr(evaluate, "evaluate_run", final_evaluation)
    monkeypatch.setattr(search, "one_standard_error", lambda val_images: 1.0)
    output = tmp_path / "search"
    result = fit(photos, output, "10m", BACKBONE, heads=("logreg", "linear"), finetune=True, finetune_epochs=2,
                 finetune_sizes=(), **TINY)

    splits = {s.path: s.split for s in read_manifest(str(output / "splits.csv")).samples}
    test_paths = {p for p, s in splits.items() if s == "test"}
    assert test_paths and not {p for p, during_test in reads if not during_test} & test_paths, \
        "no test image is decoded before the chosen model's test pass"
    assert test_paths <= {p for p, during_test in reads if during_test}

    rows = leaderboard(output)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("extract") == 1 and kinds.count("logreg") == 2 and kinds.count("head") == 4
    assert kinds.count("finetune") == 1 and {r["status"] for r in rows} == {"done"}
    assert {(r["feature_levels"], r["pooling"]) for r in rows if r["kind"] == "logreg"} == {("last", "avg"),
                                                                                            ("all", "meanstd")}
    probes = [r for r in rows if r["kind"] == "logreg"]
    others = [r for r in rows if r["kind"] in ("head", "finetune")]
    assert all(0.0 <= float(r["cv_macro_f1"]) <= 1.0 for r in probes) and not any(r["cv_macro_f1"] for r in others)
    anchor = max(probes, key=lambda r: float(r["cv_macro_f1"]))
    assert result.best["candidate"] == anchor["candidate"], "the best cross-validated probe leads"
    summary = json.loads((result.best_dir / "summary.json").read_text())
    assert summary["refit"] == "train+val" and summary["cv_macro_f1"] == float(anchor["cv_macro_f1"])
    finetune = next(r for r in rows if r["kind"] == "finetune")
    assert finetune["candidate"] == f"{anchor['candidate']}-lpft" and finetune["epochs"] == "2"

    loaded = load_run_model(result.best_dir)  # a normal run directory
    assert {s.split for s in read_manifest(str(result.best_dir / "manifest.csv")).samples} == {"train", "val", "test"}
    assert (result.best_dir / "eval" / "test" / "metrics.json").is_file()
    assert 0.0 <= result.test["macro_f1"] <= 1.0 and result.test["num_samples"] == len(test_paths)
    assert set(result.test["per_class_f1"]) == set(loaded.label_map.names)
    assert_only_the_contenders_keep_a_loadable_best_checkpoint(output, result.best["candidate"])


def interrupt_the_second_probe(monkeypatch) -> tuple[list, object]:
    """Ctrl-C as the search fits its second probe; returns the list each probe fit appends to and
    the real probe fit (to put back for the resumed run)."""
    import emorec.fit.search as search

    real, calls = search.fit_logistic_regression, []

    def interrupted_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "fit_logistic_regression", interrupted_on_the_second)
    return calls, real


def assert_only_the_contenders_keep_a_loadable_best_checkpoint(output: Path, leader: str) -> None:
    """What the search keeps: best.pt of the rows that are or may become the leader (the best
    cross-validated probe and the best val-only row), nothing of the others, no last.pt."""
    from emorec.run_model import load_run_model

    contenders = {r["candidate"] for r in Leaderboard(output / "leaderboard.csv").contenders()}
    kept = {}
    for path in (output / "candidates").glob("*/checkpoints/*"):
        kept.setdefault(path.parent.parent.name, set()).add(path.name)
    assert leader in contenders and kept == {name: {"best.pt"} for name in contenders}
    model = load_run_model(output / "candidates" / leader).model
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_a_trainer_run_ahead_of_the_best_probe_on_val_leads_and_is_installed_as_it_ran(photos, tmp_path, monkeypatch):
    """The other branch, forced: with no margin to beat, the best val-only row (a trained head)
    leads, and best/ is a copy of its run directory (no refit)."""
    import emorec.fit.search as search

    monkeypatch.setattr(search, "one_standard_error", lambda val_images: -1.0)
    output = tmp_path / "search"
    result = fit(photos, output, "10m", BACKBONE, heads=("logreg", "linear"), finetune=False, test=False, **TINY)

    heads = [r for r in leaderboard(output) if r["kind"] == "head"]
    assert result.best["candidate"] == max(heads, key=lambda r: float(r["val_macro_f1"]))["candidate"]
    ran = output / "candidates" / result.best["candidate"]
    assert json.loads((result.best_dir / "summary.json").read_text()) == json.loads((ran / "summary.json").read_text())
    assert (result.best_dir / "checkpoints" / "best.pt").read_bytes() == (ran / "checkpoints" / "best.pt").read_bytes()
    assert_only_the_contenders_keep_a_loadable_best_checkpoint(output, result.best["candidate"])


def test_a_probe_that_ends_up_leading_after_a_resume_is_refit_whoever_led_before(photos, tmp_path, monkeypatch):
    """The lead changes across resumes: a head first, then a probe added by a resumed run, then the
    head again, then the same probe again (the margin is forced each time). Whenever a probe
    leads at the end, best/ is its refit on train + val, never the train-only probe."""
    import emorec.fit.search as search

    output = tmp_path / "search"
    quick = dict(finetune=False, test=False, **TINY)

    def leader_and_best(margin: float, heads: tuple[str, ...]) -> tuple[dict, dict]:
        monkeypatch.setattr(search, "one_standard_error", lambda val_images: margin)
        result = fit(photos, output, "10m", BACKBONE, heads=heads, **quick)
        return result.best, json.loads((result.best_dir / "summary.json").read_text())

    head, summary = leader_and_best(-1.0, ("linear",))
    assert head["kind"] == "head" and "refit" not in summary
    probe, summary = leader_and_best(1.0, ("logreg", "linear"))
    assert probe["kind"] == "logreg" and summary["refit"] == "train+val"
    again, summary = leader_and_best(-1.0, ("logreg", "linear"))
    assert again["kind"] == "head" and "refit" not in summary
    back, summary = leader_and_best(1.0, ("logreg", "linear"))
    assert back["candidate"] == probe["candidate"]
    assert summary.get("refit") == "train+val", "best/ is the probe refit on train + val, not its train-only run"


def test_an_interrupted_search_resumes_without_running_finished_candidates(photos, tmp_path, monkeypatch):
    import emorec.fit.search as search

    output = tmp_path / "search"
    calls, real = interrupt_the_second_probe(monkeypatch)
    with pytest.raises(EmorecError, match="run the same emorec fit command"):
        fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=False, test=False, **TINY)
    rows = leaderboard(output)
    assert [r["status"] for r in rows if r["kind"] == "logreg"] == ["done", "failed"]
    assert [r["note"] for r in rows if r["status"] == "failed"] == ["interrupted"], "the claim is let go"
    before = {r["candidate"]: r for r in rows if r["status"] == "done"}

    calls.clear()
    monkeypatch.setattr(search, "fit_logistic_regression", real)
    result = fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=False, test=False, **TINY)
    after = {r["candidate"]: r for r in leaderboard(output)}
    assert len([r for r in after.values() if r["kind"] == "logreg"]) == 2
    assert all(after[k] == row for k, row in before.items()), "finished rows are kept as they were"
    assert result.test is None and (result.best_dir / "checkpoints" / "best.pt").is_file()

    def never(*args, **kwargs):
        raise AssertionError("a finished candidate ran again")

    monkeypatch.setattr(search, "fit_logistic_regression", never)
    again = fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=False, test=False, **TINY)
    assert again.best["candidate"] == result.best["candidate"]


def test_a_candidate_that_fails_in_any_way_is_listed_as_failed_and_the_search_goes_on(photos, tmp_path, monkeypatch):
    """Out of memory (CUDA's RuntimeError, MemoryError) or a plain bug: that candidate's row is
    failed with a one-line reason, its traceback is in fit.log, and the next candidates still run."""
    import emorec.fit.search as search

    errors = [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nSee the documentation"), MemoryError()]

    def failing(*args, **kwargs):
        raise errors.pop(0)

    monkeypatch.setattr(search, "fit_logistic_regression", failing)
    output = tmp_path / "search"
    result = fit(photos, output, "10m", BACKBONE, heads=("logreg", "linear"), finetune=False, test=False, **TINY)
    rows = leaderboard(output)
    probes = [r for r in rows if r["kind"] == "logreg"]
    assert [(r["status"], r["note"]) for r in probes] == [
        ("failed", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"), ("failed", "MemoryError")]
    heads = [r for r in rows if r["kind"] == "head"]
    assert len(heads) == 4 and all(r["status"] == "done" for r in heads)
    assert result.best["kind"] == "head" and "MemoryError" in (output / "fit.log").read_text()


def test_a_backbone_whose_extraction_fails_is_listed_and_the_next_backbone_is_tried(photos, tmp_path, monkeypatch):
    import emorec.fit.search as search

    real = search.extract_variants

    def out_of_memory_for_the_first(manifest, name, *args, **kwargs):
        if name == "test_efficientnet_ln":
            raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(manifest, name, *args, **kwargs)

    monkeypatch.setattr(search, "extract_variants", out_of_memory_for_the_first)
    twins = [BackboneChoice("test_efficientnet_ln", None, pretrained=False),
             BackboneChoice("test_efficientnet", None, pretrained=False)]
    output = tmp_path / "search"
    result = fit(photos, output, "10m", twins, heads=("logreg",), finetune=False, test=False, **TINY)
    rows = {r["candidate"]: r for r in leaderboard(output)}
    failed = rows["test_efficientnet_ln-features"]
    assert failed["status"] == "failed"
    assert failed["note"] == "RuntimeError: CUDA out of memory. Tried to allocate 8.00 GiB"
    assert rows["test_efficientnet-features"]["status"] == "done"
    assert result.best["candidate"].startswith("test_efficientnet-")


def test_a_search_resumed_with_other_settings_is_refused_in_one_line_naming_the_setting(photos, tmp_path):
    """Candidate ids do not name the image size, the seed, the views, the weights or the config:
    finished rows made with other values must not be reused. Same settings still resume."""
    import dataclasses

    from emorec.config import Config

    output = tmp_path / "search"
    quick = dict(heads=("logreg",), finetune=False, test=False)
    first = fit(photos, output, "10m", BACKBONE, **quick, **TINY)
    recorded = json.loads((output / "fit.json").read_text())["settings"]
    assert recorded["--image-size"] == 32 and recorded["--set train.seed"] == 42
    board = (output / "leaderboard.csv").read_text()

    base = Config()
    seeded = dataclasses.replace(base, train=dataclasses.replace(base.train, seed=7))
    split = dataclasses.replace(base, data=dataclasses.replace(base.data, val_fraction=0.2))
    refusals = [
        (dict(TINY, image_size=48), {}, "--image-size 32, not --image-size 48"),
        (TINY, dict(config=seeded), "--set train.seed=42, not --set train.seed=7"),
        (dict(TINY, views=2), {}, "--views 1, not --views 2"),
        (dict(TINY, head_epochs=5), dict(heads=("logreg", "linear")), "--head-epochs 2, not --head-epochs 5"),
        (TINY, dict(config=split), "--set data.val_fraction=0.1, not --set data.val_fraction=0.2"),
    ]
    for settings, extra, named in refusals:
        with pytest.raises(EmorecError) as raised:
            fit(photos, output, "10m", BACKBONE, **{**quick, **extra}, **settings)
        message = str(raised.value)
        assert "\n" not in message and f"holds a search made with {named};" in message
        assert message.endswith(f"pass a new --output, or {named.split(', not')[0]} to resume it")
    assert (output / "leaderboard.csv").read_text() == board, "nothing ran"

    again = fit(photos, output, "10m", BACKBONE, **quick, **TINY)
    assert again.best["candidate"] == first.best["candidate"]


def test_a_resumed_search_with_other_weights_for_a_backbone_is_refused(photos, tmp_path):
    from emorec.models.backbone import create_backbone

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"w{seed}.pth")
        torch.save(create_backbone("test_efficientnet").state_dict(), paths[-1])
    output = tmp_path / "search"
    fit(photos, output, "10m", [BackboneChoice.parse(f"test_efficientnet={paths[0]}")], heads=("logreg",),
        finetune=False, test=False, **TINY)
    with pytest.raises(EmorecError, match=f"made with --backbone test_efficientnet={paths[0]}, not --backbone "
                                          f"test_efficientnet={paths[1]};"):
        fit(photos, output, "10m", [BackboneChoice.parse(f"test_efficientnet={paths[1]}")], heads=("logreg",),
            finetune=False, test=False, **TINY)


def test_several_backbones_are_tried_alone_and_together(photos, tmp_path):
    """Two backbones with weight files: each one's feature sets, then both combined (their caches
    joined, no backbone run again); a combined leader is a normal run of the backbone group."""
    from emorec.config import load_config
    from emorec.run_model import load_run_model

    choices = two_backbones_with_weights(tmp_path)
    output = tmp_path / "search"
    result = fit(photos, output, "10m", choices, heads=("logreg",), finetune=False, test=False, **TINY)
    rows = [r for r in leaderboard(output) if r["kind"] == "logreg"]
    together = [r for r in rows if r["candidate"].startswith("combined-")]
    assert len(rows) == 6 and len(together) == 2 and all(r["status"] == "done" for r in rows)
    assert {r["backbone"] for r in together} == {"test_efficientnet+test_efficientnet_ln"}
    ensembles = [r for r in leaderboard(output) if r["kind"] == "ensemble"]
    assert [r["candidate"] for r in ensembles] == ["ensemble-last-avg-logreg", "ensemble-all-meanstd-logreg"]
    assert all(r["status"] == "done" and 0.0 <= float(r["cv_macro_f1"]) <= 1.0 for r in ensembles)
    for row in together + ensembles:
        cfg = load_config(output / "candidates" / row["candidate"] / "config.yaml")
        assert cfg.model.backbone == "test_efficientnet+test_efficientnet_ln"
        assert [Path(w).name for w in cfg.model.weights.split("+")] == ["test_efficientnet.pth",
                                                                         "test_efficientnet_ln.pth"]
    assert load_run_model(result.best_dir).model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_random_backbones_are_not_combined(photos, tmp_path, capsys):
    twins = [BackboneChoice("test_efficientnet", None, pretrained=False),
             BackboneChoice("test_efficientnet_ln", None, pretrained=False)]
    fit(photos, tmp_path / "search", "10m", twins, heads=("logreg",), finetune=False, test=False, **TINY)
    assert not any(r["candidate"].startswith("combined-") for r in leaderboard(tmp_path / "search"))
    assert "combined: skipped, feature caches of randomly initialised backbones" in capsys.readouterr().out


def test_candidates_that_do_not_fit_the_budget_are_skipped_and_listed(photos, tmp_path, monkeypatch):
    import emorec.fit.search as search

    now = [0.0]
    budget = Budget(100, clock=lambda: now[0])
    real = search._Search._features

    def features_then_time_runs_out(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        now[0] = 95.0  # 5 s left: less than any candidate is expected to take
        return out

    monkeypatch.setattr(search._Search, "_features", features_then_time_runs_out)
    with pytest.raises(EmorecError, match=r"^no candidate can finish within --budget 100s: after the features, the "
                                          r"first candidate needs ~30 s more; use --budget 3m or more$"):
        fit(photos, tmp_path / "search", budget, BACKBONE, heads=("logreg",), finetune=False, test=False, **TINY)
    rows = leaderboard(tmp_path / "search")
    skipped = [r for r in rows if r["kind"] == "logreg"]
    assert len(skipped) == 2 and all(r["status"] == "skipped" and "budget" in r["note"] for r in skipped)


def test_a_class_with_fewer_images_than_folds_gets_fewer_folds_said_once_and_in_the_summary(tmp_path, class_images):
    """4 images of fear: 2 train, 1 val, 1 test, so 3 train + val images cannot fill 5 stratified
    folds; the search says so in one line, uses 3, and fit.json, FitResult and best/ say 3."""
    from collections import Counter

    from emorec.data.manifest import read_manifest

    images = class_images(tmp_path / "few", {"amusement": 12, "anger": 12, "awe": 12, "fear": 4}, size=32)
    lines: list[str] = []
    output = tmp_path / "search"
    result = fit(images, output, "10m", BACKBONE, heads=("logreg",), finetune=False, test=False,
                 **{**TINY, "log": lines.append})
    per_class = Counter(s.label for s in read_manifest(str(output / "splits.csv")).samples if s.split != "test")
    assert per_class["fear"] == 3 and min(v for k, v in per_class.items() if k != "fear") >= 5
    notes = [line for line in lines if line.startswith("cross-validation")]
    assert notes == ["cross-validation: 3 folds instead of 5: class fear (3) has fewer than 5 train + val images "
                     "(a fold holds at least one image of each class)"]
    assert result.folds == 3 and json.loads((output / "fit.json").read_text())["folds"] == 3
    assert json.loads((result.best_dir / "summary.json").read_text())["folds"] == 3
    assert "by 3-fold cross-validation" in (result.best_dir / "train.log").read_text()


def test_a_class_with_one_train_and_val_image_cannot_be_cross_validated_a_one_line_error(photos, tmp_path):
    """The dataset's own splits: fear has one val image and no train image (check_trainable allows
    it), so no two folds can both hold a fear image."""
    rows = ["path,label,split"]
    for path in sorted(photos.glob("*/*.jpg")):
        index, label = int(path.stem.split("_")[-1]), path.parent.name
        split = "test" if index >= 10 else "val" if index >= 8 else "train"
        if label == "fear" and index < 9:
            continue
        rows.append(f"{path},{label},{split}")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    with pytest.raises(EmorecError, match=r"^cross-validation of the linear probes needs at least 2 train \+ val "
                                          r"images of every class; fear \(1\) has fewer: add images of that class, "
                                          r"or leave logreg out of --heads$"):
        fit(csv_path, tmp_path / "search", "10m", BACKBONE, heads=("logreg",), finetune=False, test=False, **TINY)


def test_the_extraction_stops_at_the_budgets_deadline_and_says_what_budget_would_do(photos, tmp_path, monkeypatch):
    """The extraction gets what is left of the budget as its deadline; one that would pass it
    stops (no cache is left valid), its row says so, and the error says what --budget would do."""
    import emorec.fit.search as search
    from emorec.features.cache import INDEX_NAME

    real, limits = search.extract_variants, []

    def past_its_deadline_at_once(*args, time_limit_s=None, **kwargs):
        limits.append(time_limit_s)
        return real(*args, time_limit_s=1e-6, **kwargs)

    monkeypatch.setattr(search, "extract_variants", past_its_deadline_at_once)
    budget = Budget(600, clock=lambda: 0.0)
    with pytest.raises(EmorecError, match=r"^no candidate can finish within --budget 10m: extraction alone needs "
                                          r"~\d+ s here; use --budget \d+m or more$"):
        fit(photos, tmp_path / "search", budget, BACKBONE, heads=("logreg",), finetune=False, test=False, **TINY)
    assert limits == [600.0], "no test pass, no probe yet: the whole budget is the extraction's deadline"
    [row] = leaderboard(tmp_path / "search")
    assert row["status"] == "skipped" and row["note"].startswith("budget: extraction stopped after ")
    assert not list((tmp_path / ".cache" / "features").glob(f"*/{INDEX_NAME}"))


def test_a_resumed_search_counts_the_time_its_earlier_runs_spent(photos, tmp_path, monkeypatch):
    """fit.json keeps the seconds spent, also by an interrupted run; a resumed run has only what
    is left of the same --budget, so candidates that no longer fit are skipped."""
    import emorec.fit.search as search

    output = tmp_path / "search"
    quick = dict(finetune=False, test=False, **TINY)
    calls, real = interrupt_the_second_probe(monkeypatch)
    with pytest.raises(EmorecError, match="run the same emorec fit command"):
        fit(photos, output, "10m", BACKBONE, heads=("logreg",), **quick)
    interrupted = json.loads((output / "fit.json").read_text())["spent_s"]
    monkeypatch.setattr(search, "fit_logistic_regression", real)
    resumed = fit(photos, output, "10m", BACKBONE, heads=("logreg",), **quick)
    spent = json.loads((output / "fit.json").read_text())["spent_s"]  # rounded to 0.1 s
    assert 0 < interrupted < resumed.seconds + 0.1 and resumed.seconds < spent + 0.1

    state = json.loads((output / "fit.json").read_text())
    (output / "fit.json").write_text(json.dumps({**state, "spent_s": 590.0}))  # as if earlier runs took 590 s
    last = fit(photos, output, "10m", BACKBONE, heads=("logreg", "linear"), **quick)
    heads = [r for r in leaderboard(output) if r["kind"] == "head"]
    assert len(heads) == 4 and all(r["status"] == "skipped" and r["note"].startswith("budget: ") for r in heads)
    assert last.seconds >= 590 and last.best["kind"] == "logreg"


def test_a_dataset_too_small_to_split_is_a_one_line_error_naming_the_minimum(tmp_path):
    """Two images per class cannot give every class a train, a val and a test image."""
    tiny = make_images(tmp_path / "tiny", per_class=2)
    with pytest.raises(EmorecError, match="too small to split: classes .* have fewer than the 3 images per class a "
                                          "split needs; add images of those classes"):
        fit(tiny, tmp_path / "search", "10m", BACKBONE, **TINY)


def test_a_budget_too_short_for_one_extraction_is_a_one_line_error(photos, tmp_path):
    with pytest.raises(EmorecError, match=r"^no candidate can finish within --budget 1s: extraction alone needs ~\d+ s "
                                          r"here \(test_efficientnet, 44 images\); use --budget \d+m or more$"):
        fit(photos, tmp_path / "search", "1s", BACKBONE, **TINY)


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("90s", 90), ("1800", 1800)])
def test_budgets_are_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "0", "30x"])
def test_a_bad_budget_is_a_one_line_error(text):
    with pytest.raises(EmorecError, match="budget"):
        parse_duration(text)


def test_the_probe_head_is_logistic_regression_with_the_scaler_folded_in(cache):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from emorec.training.sources import load_split

    probe = fit_logistic_regression(cache, C=0.1)
    train_x, train_y, _ = load_split(cache, "train", torch.device("cpu"))
    x = train_x.flatten(0, 1).numpy().astype(np.float64)
    y = np.repeat(train_y.numpy(), train_x.shape[1])
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=0.1, max_iter=1000, tol=1e-4, class_weight="balanced", random_state=0)
    clf.fit(scaler.transform(x), y)
    val_x = load_split(cache, "val", torch.device("cpu"))[0][:, 0].numpy().astype(np.float64)
    logits = val_x @ probe.weight.T.astype(np.float64) + probe.bias
    ours = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(ours / ours.sum(1, keepdims=True), clf.predict_proba(scaler.transform(val_x)),
                               atol=1e-4)


def test_cli_fit_prints_the_chosen_model(photos, tmp_path, capsys):
    from emorec.cli import main

    code = main(["fit", str(photos), "--backbone", "test_efficientnet", "--random-init",
                 "--output", str(tmp_path / "o"),
                 "--image-size", "32", "--views", "1", "--heads", "logreg", "--no-finetune", "--no-test",
                 "--workers", "0", "--device", "cpu", "--budget", "10m"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "chosen           test_efficientnet-" in out and str(tmp_path / "o" / "best") in out
    assert "cross-validation 5 folds over the train + val images" in out
    assert main(["fit", str(photos), "--budget", "soon", "--output", str(tmp_path / "p")]) == 2


def test_fit_reads_a_csvs_images_from_data_images_root_as_the_readme_says(photos, tmp_path, capsys):
    """`--images-root` is `emorec data`'s flag; README says train, fit and features extract take
    the config key instead. A CSV kept apart from its images works through it."""
    from emorec.cli import main
    from emorec.data.manifest import read_manifest

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "`emorec train`, `fit` and `features extract`" in readme and "--set data.images_root=DIR" in readme
    csv_path = tmp_path / "lists" / "labels.csv"
    csv_path.parent.mkdir()
    images = sorted(p.relative_to(photos) for p in photos.glob("*/*.jpg"))
    csv_path.write_text("path,label\n" + "".join(f"{p.as_posix()},{p.parts[0]}\n" for p in images))

    code = main(["fit", str(csv_path), "--set", f"data.images_root={photos}", "--backbone", "test_efficientnet",
                 "--random-init", "--output", str(tmp_path / "o"), "--image-size", "32", "--views", "1",
                 "--heads", "logreg", "--no-finetune", "--no-test", "--workers", "0", "--device", "cpu",
                 "--budget", "10m"])
    assert code == 0, capsys.readouterr()
    split = read_manifest(str(tmp_path / "o" / "splits.csv")).samples
    assert len(split) == len(images) and {Path(s.path).resolve().parent.parent for s in split} == {photos.resolve()}
