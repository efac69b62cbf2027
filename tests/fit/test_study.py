"""`emorec fit`'s bookkeeping is an Optuna study: one trial per candidate, the resume state of a
rerun, shared by processes that each claim candidates no other has started; full fine-tunes
run in rungs the successive-halving pruner can stop; a large val split scores probes alone."""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from emorec.fit import fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import one_thread  # noqa: E402,F401 (fixtures)
from tiny_search import (BACKBONE, TINY, leaderboard, photos, small_grid_in_a_temporary_folder,  # noqa: E402,F401 (fixtures)
                         two_backbones_with_weights)

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = dict(heads=("logreg",), finetune=False, test=False, **TINY)


def spy_runners(monkeypatch, calls: list, fake=None, before=None):
    """search.Runners, recording each run's candidate id; `fake(candidate, budget)` may answer
    instead (None: the real runner), `before(candidate)` is called first."""
    import emorec.fit.search as search

    class Spy(search.Runners):
        def run(self, candidate, budget):
            calls.append(candidate.id)
            if before is not None:
                before(candidate)
            scores = fake(candidate, budget) if fake is not None else None
            return scores if scores is not None else super().run(candidate, budget)

    monkeypatch.setattr(search, "Runners", Spy)


def test_the_study_is_the_resume_state_and_a_rerun_runs_nothing(photos, tmp_path, monkeypatch):
    import optuna

    calls: list[str] = []
    spy_runners(monkeypatch, calls)
    output = tmp_path / "search"
    first = fit(photos, output, "10m", BACKBONE, **QUICK)
    assert (output / "study.db").is_file() and len(calls) == 2

    study = optuna.load_study(study_name="emorec-fit", storage=f"sqlite:///{output / 'study.db'}")
    trials = {t.user_attrs["candidate"]: t for t in study.trials}
    assert set(trials) == {r["candidate"] for r in leaderboard(output)}, "the leaderboard is the trials"
    probe = trials[first.best["candidate"]]
    assert probe.value == pytest.approx(float(first.best["val_macro_f1"]), abs=1e-4)
    assert probe.user_attrs["row"]["C"] == "0.1000"

    calls.clear()
    again = fit(photos, output, "10m", BACKBONE, **QUICK)
    assert calls == [] and again.best["candidate"] == first.best["candidate"]


def test_processes_sharing_a_study_never_run_a_candidate_twice(photos, tmp_path, monkeypatch):
    """A second search on the same study starts while the first runs its first candidate (as
    another machine would): it leaves that one alone and takes the rest; the first then finds
    them finished. One leaderboard with each candidate once, one best/."""
    calls: list[str] = []
    output, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'shared.db'}"
    second: dict = {}

    def another_process_starts(candidate):
        if len(calls) == 1:
            second["result"] = fit(photos, output, "10m", BACKBONE, storage=storage, **QUICK)

    spy_runners(monkeypatch, calls, before=another_process_starts)
    first = fit(photos, output, "10m", BACKBONE, storage=storage, **QUICK)

    assert sorted(Counter(calls).values()) == [1, 1] and len(calls) == 2, "every candidate ran once"
    rows = leaderboard(output)
    assert sorted(r["candidate"] for r in rows) == sorted(set(calls) | {"test_efficientnet-features"})
    assert {r["status"] for r in rows} == {"done"}
    seen_by_second = {r["candidate"]: r["status"] for r in second["result"].rows}
    assert seen_by_second[calls[0]] == "running" and seen_by_second[calls[1]] == "done"
    assert second["result"].best is not None and (first.best_dir / "checkpoints" / "best.pt").is_file()
    assert not (output / "study.db").exists(), "--storage holds the study"


def test_a_search_ending_with_best_built_and_scored_for_its_leader_takes_those_scores(photos, tmp_path,
                                                                                     monkeypatch):
    """What the second of two processes sharing OUTPUT finds at its end (under OUTPUT/.best.lock),
    and what a rerun finds: best/ built and scored for the same leader in fit.json. It takes those
    scores instead of replacing best/ (which removed the other process's report folder under it)
    or reading the test split again."""
    import emorec.fit.best_model as best_model

    tested, installed = [], []
    real_test, real_install = best_model.BestModel.test, best_model.BestModel.install
    monkeypatch.setattr(best_model.BestModel, "test", lambda self, *a: tested.append(1) or real_test(self, *a))
    monkeypatch.setattr(best_model.BestModel, "install",
                        lambda self, *a, **k: installed.append(1) or real_install(self, *a, **k))
    output, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'shared.db'}"
    quick = {**QUICK, "test": True}
    first = fit(photos, output, "10m", BACKBONE, storage=storage, **quick)
    assert len(tested) == 1 and len(installed) == 2, "the leader's copy, then its refit"
    again = fit(photos, output, "10m", BACKBONE, storage=storage, **quick)
    assert again.best["candidate"] == first.best["candidate"]
    assert len(tested) == 1 and len(installed) == 2, "neither built nor scored again"
    assert again.test == first.test and first.test["num_samples"] > 0 and Path(first.test["report"]).is_file()


def forced_rungs(forced: dict[str, list[float]], calls: dict[str, list[dict]]):
    """A fake runner for the full fine-tunes: the scores in `forced`, one per rung, and in `calls`
    what each rung asked for (its epochs, the OneCycle's length, its seconds)."""

    def fake(candidate, budget):
        if candidate.id not in forced:
            return None
        settings = dict(o.split("=", 1) for o in candidate.overrides if o.startswith("train."))
        stop = int(settings["train.stop_after_epoch"])
        calls.setdefault(candidate.id, []).append({"stop_after": stop, "epochs": int(settings["train.epochs"]),
                                                   "seconds": budget.seconds})
        score = forced[candidate.id][len(calls[candidate.id]) - 1]
        return {"val_macro_f1": score, "val_accuracy": score, "best_epoch": stop, "epochs": stop}

    return fake


def probes_scoring(score: float, fake):
    """A fake runner: every probe scores `score` (val and cross-validated), the rest go to `fake`."""

    def run(candidate, budget):
        if candidate.kind == "logreg":
            return {"val_macro_f1": score, "val_accuracy": score, "cv_macro_f1": score}
        return fake(candidate, budget)

    return run


def test_fine_tunes_run_rung_by_rung_and_the_worse_first_rung_is_pruned_even_when_it_reported_first(
        photos, tmp_path, monkeypatch):
    """Two full fine-tunes (64 and 96 px for 40 px images), scores forced: both train one epoch,
    then the 64 px one, whose score is lower though it reported first (Optuna's asynchronous
    pruner would have promoted it), is pruned with that score; the 96 px one, the one left, trains
    on with the rest of the budget, its OneCycle re-planned before that last rung."""
    import emorec.fit.search as search

    forced = {"test_efficientnet-full-64px": [0.2], "test_efficientnet-full-96px": [0.95, 0.97]}  # probes: 1.0
    calls: dict[str, list[dict]] = {}
    order: list[str] = []
    spy_runners(monkeypatch, order, fake=forced_rungs(forced, calls))
    monkeypatch.setattr(search, "one_standard_error", lambda val_images: 1.0)  # the probe keeps the lead
    output = tmp_path / "search"
    result = fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=True, test=False, **TINY)

    rows = {r["candidate"]: r for r in leaderboard(output)}
    pruned, kept = rows["test_efficientnet-full-64px"], rows["test_efficientnet-full-96px"]
    assert pruned["status"] == "pruned" and float(pruned["val_macro_f1"]) == 0.2 and "rung 1 of 3" in pruned["note"]
    assert kept["status"] == "done" and float(kept["val_macro_f1"]) == 0.97
    finetunes = [c for c in order if "-full-" in c]
    assert finetunes == ["test_efficientnet-full-64px", "test_efficientnet-full-96px", "test_efficientnet-full-96px"]
    assert [c["stop_after"] for c in calls["test_efficientnet-full-64px"]] == [1]
    first, last = calls["test_efficientnet-full-96px"]
    assert first["stop_after"] == 1 and last["stop_after"] == last["epochs"] > 1, "the last rung runs to the end"
    assert int(kept["epochs"]) == last["epochs"]
    assert order.index("test_efficientnet-full-64px") > max(i for i, c in enumerate(order) if "logreg" in c), \
        "small data: the frozen phase first"
    assert result.best["kind"] == "logreg"
    assert json.loads((output / "candidates" / "test_efficientnet-full-96px" / "rungs.json").read_text())["reports"] \
        == [[1, 0.95], [last["epochs"], 0.97]]


def test_on_large_data_the_fine_tunes_run_first_and_one_that_wins_on_val_is_chosen(photos, tmp_path, monkeypatch):
    """From FINETUNES_FIRST_TRAIN train images on (lowered here), the fine-tunes' rungs come before
    the extraction, and a fine-tune ahead of every probe on val is the chosen model."""
    import emorec.fit.search as search

    monkeypatch.setattr(search, "FINETUNES_FIRST_TRAIN", 1)
    forced = {"test_efficientnet-full-64px": [0.97, 0.99], "test_efficientnet-full-96px": [0.1]}
    calls: dict[str, list[dict]] = {}
    order: list[str] = []
    spy_runners(monkeypatch, order, fake=probes_scoring(0.3, forced_rungs(forced, calls)))
    installed = []
    monkeypatch.setattr(search.BestModel, "promote", lambda self, row: installed.append(row["candidate"]))
    monkeypatch.setattr(search.BestModel, "refit", lambda self, row: None)
    output = tmp_path / "search"
    result = fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=True, test=False, **TINY)

    assert order[:3] == ["test_efficientnet-full-64px", "test_efficientnet-full-96px", "test_efficientnet-full-64px"]
    assert any("logreg" in c for c in order[3:]), "the frozen phase still runs with what is left"
    assert result.best["candidate"] == "test_efficientnet-full-64px" and installed[-1] == result.best["candidate"]


def test_fine_tunes_whose_first_rung_does_not_fit_are_skipped_saying_what_it_needs_and_what_the_end_keeps(
        photos, tmp_path, monkeypatch):
    """An epoch estimated at 2,000 s cannot fit a 10-minute budget: neither fine-tune runs, and
    each row says what the rung needs, what the end (test pass, refit) keeps and what was left,
    so a user can tell why a rung that looks affordable was not started."""
    import emorec.fit.search as search

    calls: dict[str, list[dict]] = {}
    spy_runners(monkeypatch, [], fake=forced_rungs({}, calls))
    monkeypatch.setattr(search.Estimates, "finetune_epoch", lambda self, name: 2000.0)
    output = tmp_path / "search"
    fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=True, test=False, **TINY)

    rows = [r for r in leaderboard(output) if "-full-" in r["candidate"]]
    assert len(rows) == 2 and not calls
    for row in rows:
        assert row["status"] == "skipped", row
        assert re.search(r"rung 1 needs ~\d+ s and the end keeps ~\d+ s \(test pass, refit\), \d+ s left$",
                         row["note"]), row["note"]


@pytest.mark.parametrize("best_first_rung, goes_on", [(0.45, False), (0.55, True)])
def test_a_fine_tune_far_behind_the_frozen_leader_stops_at_its_rung(photos, tmp_path, monkeypatch, best_first_rung,
                                                                    goes_on):
    """Small data, the probe leading on val at 0.6: the better of two fine-tunes after the first
    rung goes on only within TRAIL_MARGIN (0.1) of it; 0.45 stops there, noted against the probe,
    and no fine-tune trains further; 0.55 trains its last rung."""
    import emorec.fit.search as search

    assert search.TRAIL_MARGIN == 0.1
    forced = {"test_efficientnet-full-64px": [0.3], "test_efficientnet-full-96px": [best_first_rung, 0.58]}
    calls: dict[str, list[dict]] = {}
    order: list[str] = []
    spy_runners(monkeypatch, order, fake=probes_scoring(0.6, forced_rungs(forced, calls)))
    monkeypatch.setattr(search.BestModel, "promote", lambda self, row: None)
    monkeypatch.setattr(search.BestModel, "refit", lambda self, row: None)
    monkeypatch.setattr(search, "one_standard_error", lambda val_images: 1.0)  # the probe keeps the lead
    output = tmp_path / "search"
    fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=True, test=False, **TINY)

    rows = {r["candidate"]: r for r in leaderboard(output)}
    better = rows["test_efficientnet-full-96px"]
    assert rows["test_efficientnet-full-64px"]["status"] == "pruned"
    assert len(calls["test_efficientnet-full-96px"]) == (2 if goes_on else 1)
    if goes_on:
        assert better["status"] == "done" and float(better["val_macro_f1"]) == 0.58
    else:
        assert better["status"] == "pruned" and float(better["val_macro_f1"]) == 0.45
        assert "more than 0.1 behind test_efficientnet-last-avg-logreg" in better["note"], better["note"]


def test_the_lp_ft_is_planned_again_from_its_measured_first_epoch(photos, tmp_path, monkeypatch):
    """The LP-FT trains one epoch of a OneCycle planned from the estimate (10 s an epoch: 10
    epochs, the most allowed), then, that epoch having taken 100 s, only as many more as its share
    holds at 100 s each, resumed with the schedule re-planned to them."""
    import emorec.fit.search as search

    calls: list[dict] = []
    clock = {"offset": 0.0}
    real_monotonic = time.monotonic

    def lpft(candidate, budget):
        if not candidate.id.endswith("-lpft"):
            return None
        settings = dict(o.split("=", 1) for o in candidate.overrides if o.startswith("train."))
        calls.append({"epochs": int(settings["train.epochs"]), "stop_after": int(settings["train.stop_after_epoch"]),
                      "seconds": budget.seconds})
        clock["offset"] += 100.0  # what the search's own clock sees this run take
        return {"val_macro_f1": 0.5, "val_accuracy": 0.5, "best_epoch": 1, "epochs": calls[-1]["stop_after"]}

    spy_runners(monkeypatch, [], fake=lpft)
    monkeypatch.setattr(search.time, "monotonic", lambda: real_monotonic() + clock["offset"])
    monkeypatch.setattr(search.Estimates, "finetune_epoch", lambda self, name: 10.0)
    output = tmp_path / "search"
    fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=True, finetune_epochs=10, finetune_sizes=(),
        test=False, **TINY)
    first, second = calls
    assert first["epochs"] == 10 and first["stop_after"] == 1
    share = first["seconds"] - search.FINETUNE_START_S  # the first epoch may take the whole share
    assert second["epochs"] == second["stop_after"] == 1 + int((share - 100) // 100) < 10
    [row] = [r for r in leaderboard(output) if r["candidate"].endswith("-lpft")]
    assert row["status"] == "done" and row["epochs"] == str(second["epochs"])


def test_an_interrupted_fine_tune_resumes_its_rungs_without_running_them_again(photos, tmp_path, monkeypatch):
    """Interrupted in the second fine-tune's first rung: the rerun tells the first one's new trial
    its recorded score, does not run that rung again, and decides the rung on both scores."""
    import emorec.fit.search as search
    from emorec.training.result import TrainingInterrupted

    forced = {"test_efficientnet-full-64px": [0.95, 0.97], "test_efficientnet-full-96px": [0.3]}  # probes: 1.0
    calls: dict[str, list[dict]] = {}
    order: list[str] = []
    fake = forced_rungs(forced, calls)

    interrupted = []

    def interrupt_after_the_first_rungs(candidate):
        if candidate.id == "test_efficientnet-full-96px" and not interrupted:
            interrupted.append(candidate.id)
            raise TrainingInterrupted("interrupted by SIGTERM", 143)

    def fake_with_checkpoint(candidate, budget):
        scores = fake(candidate, budget)
        if scores is not None:  # a rung leaves a checkpoint to resume, as the trainer does
            run_dir = output / "candidates" / candidate.id / "checkpoints"
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "last.pt").write_bytes(b"x")
        return scores

    spy_runners(monkeypatch, order, fake=fake_with_checkpoint, before=interrupt_after_the_first_rungs)
    monkeypatch.setattr(search, "one_standard_error", lambda val_images: 1.0)
    output = tmp_path / "search"
    with pytest.raises(TrainingInterrupted):
        fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=True, test=False, **TINY)
    assert [c["stop_after"] for c in calls["test_efficientnet-full-64px"]] == [1]

    fit(photos, output, "10m", BACKBONE, heads=("logreg",), finetune=True, test=False, **TINY)
    first, last = calls["test_efficientnet-full-64px"]
    assert first["stop_after"] == 1 and last["stop_after"] > 1, "its first rung is not run again"
    assert [c["stop_after"] for c in calls["test_efficientnet-full-96px"]] == [1]
    rows = {r["candidate"]: r for r in leaderboard(output)}
    assert rows["test_efficientnet-full-96px"]["status"] == "pruned"
    assert rows["test_efficientnet-full-64px"]["status"] == "done"
    assert float(rows["test_efficientnet-full-64px"]["val_macro_f1"]) == 0.97


@pytest.mark.parametrize("values, live, kept", [
    ({"a": 0.2, "b": 0.5}, ["a", "b"], ["b"]),
    ({"a": 0.9, "b": 0.5, "c": 0.1}, ["a", "b", "c"], ["a"]),
    ({n: v for n, v in zip("abcdef", (0.1, 0.6, 0.3, 0.5, 0.2, 0.4))}, list("abcdef"), ["b", "d"]),
    ({"a": 0.9, "b": 0.5}, ["b"], []),  # a rival of another process leads: this one stops
])
def test_rung_survivors_are_the_top_third_of_those_that_reached_the_rung(values, live, kept):
    from emorec.fit.study import rung_survivors

    assert rung_survivors(values, live) == kept


def test_a_large_val_split_scores_probes_on_val_alone(photos, tmp_path, monkeypatch):
    """From `cv_max_val` val images on (2,500 by default; 1 here) no probe is cross-validated:
    no fold is fit, the rows have no cv score, and the chosen probe is installed as it ran."""
    import emorec.fit.runners as runners

    def no_folds(*args, **kwargs):
        raise AssertionError("cross-validation ran")

    monkeypatch.setattr(runners, "out_of_fold_logits", no_folds)
    output = tmp_path / "search"
    notes: list[str] = []
    result = fit(photos, output, "10m", BACKBONE, cv_max_val=1, **{**QUICK, "log": notes.append})
    probes = [r for r in leaderboard(output) if r["kind"] == "logreg"]
    assert len(probes) == 2 and all(r["status"] == "done" and r["cv_macro_f1"] == "" for r in probes)
    assert result.folds is None and any("scored on val only" in n for n in notes)
    assert "refit" not in json.loads((result.best_dir / "summary.json").read_text())


def test_every_backbones_probes_then_their_ensemble_run_before_any_trained_head(photos, tmp_path, monkeypatch):
    """The ensemble of probes comes right after the probes it is made of, ahead of the trained
    heads, so a short budget reaches it (on Emotion6 it was behind 60 heads)."""
    choices = two_backbones_with_weights(tmp_path)
    order: list[str] = []
    heads_score = lambda c, b: {"val_macro_f1": 0.1, "val_accuracy": 0.1, "best_epoch": 1, "epochs": 1}  # noqa: E731
    spy_runners(monkeypatch, order, fake=lambda c, b: heads_score(c, b) if c.kind == "head" else None)
    fit(photos, tmp_path / "search", "10m", choices, **{**QUICK, "heads": ("logreg", "linear")})
    kinds = ["probe" if "-logreg-C" in c else "ensemble" if c.startswith("ensemble-") else "head" for c in order]
    first_head = kinds.index("head")
    # One C in the tiny grid: 2 backbones x 2 feature sets of probes, then the 2 ensembles; after
    # them, 2 heads on each of the 6 sets (the combined ones included) and the combined sets' probes.
    assert kinds[:first_head] == ["probe"] * 4 + ["ensemble"] * 2, order
    assert Counter(kinds[first_head:]) == Counter({"head": 12, "probe": 2}), order


@pytest.mark.parametrize("backbones", [1, 2])
def test_the_test_pass_is_reserved_for_every_backbone_a_group_leader_would_run(photos, tmp_path, monkeypatch,
                                                                                  backbones):
    """A test pass estimated at 350 s per backbone fits a 10-minute budget with one backbone; with
    two, whose ensemble's test pass runs both, 700 s do not, and nothing starts."""
    import emorec.fit.search as search
    from emorec.errors import EmorecError
    from emorec.fit.backbones import BackboneChoice

    monkeypatch.setattr(search.Estimates, "test_pass", lambda self, name, views=2, scale=1.0: 350.0)
    choices = [BackboneChoice(name, None, pretrained=False) for name in ("test_efficientnet", "test_efficientnet_ln")]
    run = lambda: fit(photos, tmp_path / "search", "10m", choices[:backbones], **{**QUICK, "test": True})  # noqa: E731
    if backbones == 1:
        assert run().test is not None
    else:
        with pytest.raises(EmorecError, match="no candidate can finish within --budget 10m"):
            run()
