"""Candidate runners: a candidate and a budget in, its scores out. They neither pick candidates
nor record them, so any loop (the search's, a trial sampler's) can drive them."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

from emorec.config import Config, load_config
from emorec.fit.budget import Budget
from emorec.fit.candidates import FeatureSet, grid
from emorec.fit.leaderboard import Leaderboard
from emorec.fit.runners import CV_FILE, Runners, Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import cache, data, one_thread  # noqa: E402,F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def workspace(cache, tmp_path) -> Workspace:
    """A search's OUTPUT with its splits and one feature set, and no leaderboard."""
    output = tmp_path / "search"
    output.mkdir()
    shutil.copyfile(cache.manifest_csv, output / "splits.csv")
    base = Config()
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, device="cpu"))
    ws = Workspace(output, base)
    ws.sets["tiny-last-avg"] = cache
    return ws


def test_every_grid_candidate_runs_from_a_candidate_and_a_budget_to_its_scores(workspace):
    features = FeatureSet("tiny", "test_efficientnet", "last", "avg")
    candidates = grid(features, heads=("logreg", "linear"), epochs=1)
    candidates = [candidates[0], next(c for c in candidates if c.kind == "head")]
    board = Leaderboard(workspace.output / "leaderboard.csv")
    runners = Runners(workspace, board)

    probe, head = (runners.run(c, Budget(600).share(123)) for c in candidates)

    assert {"val_macro_f1", "val_accuracy", "best_epoch", "cv_macro_f1"} <= set(probe)
    assert 0.0 <= probe["cv_macro_f1"] <= 1.0 and (workspace.run_dir(candidates[0]) / CV_FILE).is_file()
    assert {"val_macro_f1", "val_accuracy", "best_epoch", "epochs", "note"} <= set(head) and head["epochs"] == 1
    assert load_config(workspace.run_dir(candidates[1]) / "config.yaml").train.time_limit_s == 123, \
        "a trainer run is cut at the budget's seconds"
    for candidate in candidates:
        assert (workspace.run_dir(candidate) / "checkpoints" / "best.pt").is_file()
    assert not board.rows and not board.path.exists(), "runners do not record: the loop that drives them does"


def test_a_probe_whose_cross_validation_would_not_fit_its_budget_does_not_start_it(workspace):
    """The probe took 50 s: its 5 folds would take ~250 s of the 100 s it has. Nothing is
    written, so the loop can list it as skipped for the budget."""
    from emorec.fit.budget import OutOfBudget
    from emorec.fit.probe import fit_logistic_regression

    def slow(cache, C, seed=0):
        return dataclasses.replace(fit_logistic_regression(cache, C, seed=seed), seconds=50.0)

    candidate = grid(FeatureSet("tiny", "test_efficientnet", "last", "avg"), heads=("logreg",))[0]
    runners = Runners(workspace, Leaderboard(workspace.output / "leaderboard.csv"), slow)
    with pytest.raises(OutOfBudget, match=r"^its cross-validation needs ~250 s, 100 s left$"):
        runners.run(candidate, Budget(600).share(100))
    assert not workspace.run_dir(candidate).exists()
