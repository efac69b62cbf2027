"""Cross-validated probes: out-of-fold scores, the ensemble head, and the leader rule."""

from __future__ import annotations

import numpy as np
import pytest

from emorec.fit.crossval import ensemble_probe, folds, out_of_fold_logits
from emorec.fit.leaderboard import Leaderboard, one_standard_error
from emorec.fit.probe import fit_probe_arrays
from emorec.models.backbone_group import group_columns


def separable(n_per_class=30, classes=3, dims=8, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(size=(classes, dims)) * 3
    x = centres[y][:, None, :] + rng.normal(size=(len(y), 2, dims)) * noise
    return x.astype(np.float32), y


def test_out_of_fold_logits_never_score_an_image_with_a_probe_that_saw_it():
    """On random labels a probe fits its own training images well but is at chance out of fold:
    a leak of the held-out fold into training would show as in-sample accuracy."""
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(120, 1, 200)).astype(np.float32), 2, axis=1)
    y = np.tile(np.arange(3), 40)
    rng.shuffle(y)
    in_sample = (fit_probe_arrays(x, y, 100.0, 3).logits(x[:, 0]).argmax(1) == y).mean()
    held_out = (out_of_fold_logits(x, y, 100.0, 3).argmax(1) == y).mean()
    assert in_sample > 0.9 and held_out < 0.5


def test_out_of_fold_logits_are_reproducible_and_learn_real_structure():
    x, y = separable()
    first, second = out_of_fold_logits(x, y, 1.0, 3, seed=3), out_of_fold_logits(x, y, 1.0, 3, seed=3)
    assert first.shape == (90, 3) and np.array_equal(first, second)
    assert (first.argmax(1) == y).mean() > 0.9


def test_folds_are_stratified_and_shrink_to_the_smallest_class():
    y = np.array([0] * 20 + [1] * 3)
    parts = folds(y, k=5, seed=0)
    assert len(parts) == 3, "a class of 3 images allows 3 folds, not 5"
    assert sorted(np.concatenate([held for _, held in parts]).tolist()) == list(range(23))
    assert all((y[held] == 1).sum() == 1 for _, held in parts)


def test_a_class_missing_from_a_fold_still_gets_a_row_that_never_wins():
    x, y = separable(classes=3)
    keep = y != 1
    probe = fit_probe_arrays(x[keep], y[keep], 1.0, num_classes=3)
    assert probe.weight.shape == (3, 8) and not (probe.logits(x[:, 0]).argmax(1) == 1).any()


@pytest.mark.parametrize("levels,pooling", [("last", "avg"), ("last", "meanstd"), ("all", "meanstd")])
def test_the_ensemble_head_on_the_group_vector_is_the_mean_of_the_members_logits(levels, pooling):
    """The group's vector lays the members' columns out as group_columns says (with last-level
    mean + std, all means first); the ensemble's one linear map must give the members' mean."""
    rng = np.random.default_rng(1)
    channels = [[4, 6], [3, 5]]
    plan = group_columns(channels, levels, pooling)
    widths = [max(max(cols) for m, cols in plan if m == i) + 1 for i in range(2)]
    member_x = [rng.normal(size=(10, w)).astype(np.float32) for w in widths]
    group_x = np.concatenate([member_x[m][:, cols] for m, cols in plan], axis=1)
    probes = [fit_probe_arrays(np.repeat(mx[:, None], 2, 1), np.arange(10) % 3, 1.0, 3) for mx in member_x]
    ensemble = ensemble_probe(probes, plan)
    expected = (probes[0].logits(member_x[0]) + probes[1].logits(member_x[1])) / 2
    assert np.allclose(ensemble.logits(group_x), expected, atol=1e-4)


def _row(candidate, kind, val, cv=""):
    return {"candidate": candidate, "kind": kind, "val_macro_f1": val, "cv_macro_f1": cv, "status": "done"}


def test_the_leader_is_the_best_cross_validated_probe_unless_a_head_is_a_standard_error_ahead(tmp_path):
    board = Leaderboard(tmp_path / "leaderboard.csv", margin=one_standard_error(100))  # 0.05
    for row in (_row("probe-a", "logreg", 0.60, 0.55), _row("probe-b", "logreg", 0.62, 0.53),
                _row("head", "head", 0.64)):
        board.record(row)
    assert board.best()["candidate"] == "probe-a", "0.64 is within one standard error of probe-a's 0.60"
    board.record(_row("head", "head", 0.66))
    assert board.best()["candidate"] == "head"
    only_heads = Leaderboard(tmp_path / "other.csv")
    only_heads.record(_row("h1", "head", 0.4))
    only_heads.record(_row("h2", "head", 0.5))
    assert only_heads.best()["candidate"] == "h2", "without probes the val score decides"


def test_the_best_of_many_heads_must_also_beat_what_the_best_of_that_many_gains_by_chance(tmp_path):
    """Ten more heads at 0.40 do not change which head is best (0.66), but they make its lead over
    the probe (0.06, above one standard error of 0.05) what the best of 11 gains by chance alone."""
    from emorec.fit.leaderboard import expected_maximum

    assert expected_maximum(1) == 0.0
    assert [round(expected_maximum(k), 2) for k in (2, 10, 36)] == [0.56, 1.54, 2.12]  # tables of normal order statistics
    board = Leaderboard(tmp_path / "leaderboard.csv", margin=0.05)
    board.record(_row("probe", "logreg", 0.60, 0.55))
    board.record(_row("head", "head", 0.66))
    assert board.best()["candidate"] == "head" and board.challenge_margin() == 0.05
    for i in range(10):
        board.record(_row(f"weak-head-{i}", "head", 0.40))
    assert board.challenge_margin() == pytest.approx(0.05 * (1 + 1.586), abs=1e-3)
    assert board.best()["candidate"] == "probe"
    assert {r["candidate"] for r in board.contenders()} == {"head", "probe"}, "the head may lead again"


def test_a_head_that_loses_the_lead_to_a_probe_can_get_it_back_and_stays_a_contender(tmp_path):
    """A better cross-validated probe with a lower val score hands the lead back to the head it
    displaced: the head must still be a contender (its checkpoint kept), the displaced probe not."""
    board = Leaderboard(tmp_path / "leaderboard.csv", margin=0.05)
    board.record(_row("head", "head", 0.64))
    board.record(_row("probe-a", "logreg", 0.62, 0.55))
    assert board.best()["candidate"] == "probe-a"
    board.record(_row("probe-b", "logreg", 0.58, 0.57))
    assert board.best()["candidate"] == "head", "0.64 >= 0.58 + 0.05"
    assert {r["candidate"] for r in board.contenders()} == {"head", "probe-b"}
