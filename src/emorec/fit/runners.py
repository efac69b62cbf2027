"""Running one candidate: `run(candidate, budget) -> scores`, one runner per kind of candidate.

A runner neither picks candidates nor records them: the search (`search.py`) decides which
candidate runs next, with how much time, and what becomes of its scores (the leaderboard, the
checkpoints kept). Each candidate runs in OUTPUT/candidates/<id>/, a normal run directory.

- `ProbeRunner` (kind logreg): the linear probe on the train views, written as a run; scored on
  val and by 5-fold cross-validation over train + val (`crossval.py`).
- `EnsembleRunner` (kind ensemble): the members' best probes averaged in logit space, scored by
  the sum of their out-of-fold logits.
- `TrainerRunner` (kinds head and finetune): the one trainer, on the cached vectors (a head) or
  on the images from a finished run (LP-FT), cut at the budget's seconds.

Scores are a leaderboard row's measured columns: val_macro_f1, val_accuracy, best_epoch, and
cv_macro_f1 for the cross-validated kinds (epochs, note, C where they apply). A runner raises
`EmorecError` for a candidate that cannot run, `OutOfBudget` for one whose rest would not fit
its budget (a probe's cross-validation is not started then).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from emorec.config import Config, apply_overrides, config_from_dict, load_config
from emorec.errors import EmorecError
from emorec.fit.budget import Budget, OutOfBudget
from emorec.fit.candidates import Candidate
from emorec.fit.crossval import FOLDS, ensemble_probe, out_of_fold_logits, train_val_views
from emorec.fit.feature_sets import COMBINED_TAG
from emorec.fit.leaderboard import Leaderboard
from emorec.fit.probe import LINEAR_HEAD, Probe, fit_logistic_regression, write_probe_run
from emorec.fit.state import SPLITS_FILE
from emorec.training.validation import macro_f1

# What a probe keeps for the ensemble of probes, and what an ensemble keeps for its refit.
CV_FILE = "crossval.npz"
MEMBERS_FILE = "members.json"
# A trainer run ended by its time limit this close to it was cut by the budget.
CUT_MARGIN_S = 5.0

Scores = dict[str, Any]


class CandidateRunner(Protocol):
    def run(self, candidate: Candidate, budget: Budget) -> Scores:
        """Run `candidate` in its run directory within `budget` and return its scores."""


class Workspace:
    """What the runs of one search share: OUTPUT (candidates/, splits.csv, fit.log), the base
    config every run's config starts from, and the feature sets extracted so far by name."""

    def __init__(self, output: Path, base: Config):
        self.output, self.base = output, base
        self.candidates_dir = output / "candidates"
        self.sets: dict[str, Any] = {}  # feature set name -> its cache
        self.folds = FOLDS  # of the probes' cross-validation (fewer for a class of fewer images)
        self.cross_validate = True  # False: probes are scored on val alone (a large val split)

    def run_dir(self, candidate: Candidate) -> Path:
        return self.candidates_dir / candidate.id

    def config(self, base: Config, overrides, run_dir: Path) -> Config:
        """`base` with `overrides`, writing to `run_dir`, reading the search's splits."""
        values = apply_overrides(base.to_dict(), [*overrides, f"train.output_dir={run_dir.parent}",
                                                  f"train.name={run_dir.name}",
                                                  f"data.source={self.output / SPLITS_FILE}"])
        return config_from_dict(values)

    @contextlib.contextmanager
    def quiet(self):
        """The trainer's console (epoch lines, progress bars) goes to OUTPUT/fit.log."""
        with open(self.output / "fit.log", "a", encoding="utf-8") as f, contextlib.redirect_stderr(f):
            yield

    def ensemble_plan(self, member_sets: list[str], levels: str, pooling: str):
        """Where each column of the combined vector comes from (`group_columns`)."""
        from emorec.models.backbone_group import group_columns

        channels = [self.sets[name].index["stats"]["level_channels"] for name in member_sets]
        return group_columns(channels, levels, pooling)


class ProbeRunner:
    """Kind logreg. `fit` fits the probe of a cache at a C (`probe.fit_logistic_regression`)."""

    def __init__(self, workspace: Workspace, fit: Callable[..., Probe] = fit_logistic_regression):
        self.workspace, self.fit = workspace, fit
        self._views_of: tuple[str, Any] | None = None  # the last cache's train + val views

    def run(self, candidate: Candidate, budget: Budget) -> Scores:
        ws = self.workspace
        cache = ws.sets[candidate.features.name]
        run_dir = ws.run_dir(candidate)
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an interrupted write; the probe takes seconds
        cfg = ws.config(ws.base, LINEAR_HEAD, run_dir)
        C = candidate.settings["C"]
        probe = self.fit(cache, C, seed=cfg.train.seed)
        if not ws.cross_validate:
            row = write_probe_run(cfg, cache, probe, run_dir)
            np.savez(run_dir / CV_FILE, weight=probe.weight, bias=probe.bias)  # for the ensemble of probes
            return {"val_macro_f1": row["val_macro_f1"], "val_accuracy": row["val_accuracy"], "best_epoch": 1}
        # Each fold's fit is about as long as this one (4/5 of train + val, against train alone).
        cross_validation = probe.seconds * ws.folds
        if not budget.allows(cross_validation):
            raise OutOfBudget(f"its cross-validation needs ~{cross_validation:.0f} s, {budget.remaining():.0f} s left",
                              cross_validation)
        row = write_probe_run(cfg, cache, probe, run_dir)
        x, y = self.views(cache)
        logits = out_of_fold_logits(x, y, C, len(cache.label_names), seed=cfg.train.seed, k=ws.folds)
        # Kept for the ensemble of probes: its folds' logits and the train-only map.
        np.savez(run_dir / CV_FILE, logits=logits, targets=y, weight=probe.weight, bias=probe.bias)
        return {"val_macro_f1": row["val_macro_f1"], "val_accuracy": row["val_accuracy"], "best_epoch": 1,
                "cv_macro_f1": macro_f1(y, logits.argmax(1), len(cache.label_names))}

    def views(self, cache):
        """Train + val views of `cache`, loaded once for the probes of one feature set."""
        if self._views_of is None or self._views_of[0] != str(cache.root):
            self._views_of = (str(cache.root), train_val_views(cache))
        return self._views_of[1]


class EnsembleRunner:
    """Kind ensemble: the members' probes averaged in logit space, scored by the sum of their
    out-of-fold logits (same folds: same images, order and seed), written as the group's linear
    head on the combined feature set."""

    def __init__(self, workspace: Workspace, board: Leaderboard):
        self.workspace, self.board = workspace, board

    def run(self, candidate: Candidate, budget: Budget) -> Scores:
        ws, features = self.workspace, candidate.features
        cache = ws.sets[f"{COMBINED_TAG}-{features.feature_levels}-{features.pooling}"]
        run_dir = ws.run_dir(candidate)
        members = candidate.settings["members"]
        picks = [self.board.best_probe(name) for name in members]
        if any(p is None for p in picks):
            raise EmorecError("a member backbone has no finished probe to ensemble")
        saved = [np.load(ws.candidates_dir / p["candidate"] / CV_FILE) for p in picks]
        cross_validated = all("logits" in s for s in saved)
        if cross_validated and any(s["targets"].shape != saved[0]["targets"].shape or (s["targets"] != saved[0]["targets"]).any()
               for s in saved):
            raise EmorecError("the member backbones' probes were scored on different images; run the search again "
                              "with a new --output")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        plan = ws.ensemble_plan(members, features.feature_levels, features.pooling)
        probe = ensemble_probe([Probe(s["weight"], s["bias"], float(p["C"]), 0, 0.0) for s, p in zip(saved, picks)],
                               plan)
        Cs = "/".join(p["C"] for p in picks)
        row = write_probe_run(ws.config(ws.base, LINEAR_HEAD, run_dir), cache, probe, run_dir,
                              describe=f"ensemble of linear probes ({', '.join(p['candidate'] for p in picks)}): "
                                       f"their logits averaged, one linear head of the backbone group")
        (run_dir / MEMBERS_FILE).write_text(json.dumps([{"set": name, "candidate": p["candidate"], "C": float(p["C"])}
                                                        for name, p in zip(members, picks)]))
        if not cross_validated:  # a large val split: scored there alone, like its members
            return {"val_macro_f1": row["val_macro_f1"], "val_accuracy": row["val_accuracy"], "best_epoch": 1,
                    "C": Cs}
        logits = sum(s["logits"] for s in saved)
        return {"val_macro_f1": row["val_macro_f1"], "val_accuracy": row["val_accuracy"], "best_epoch": 1, "C": Cs,
                "cv_macro_f1": macro_f1(saved[0]["targets"], logits.argmax(1), len(cache.label_names))}


class TrainerRunner:
    """Kinds head (the trainer on the candidate's cached feature set) and finetune (on the images,
    from the run in `candidate.start_from`, whose config is the base). The budget's seconds are
    the run's `train.time_limit_s`; a run interrupted before continues from its last checkpoint."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace

    def run(self, candidate: Candidate, budget: Budget) -> Scores:
        from emorec.training.trainer import train

        ws = self.workspace
        if candidate.kind == "finetune":
            base = load_config(candidate.recipe or candidate.start_from / "config.yaml")
            features = None
        else:
            base, features = ws.base, ws.sets[candidate.features.name]
        run_dir = ws.run_dir(candidate)
        overrides = (*candidate.overrides, f"train.time_limit_s={budget.seconds:.0f}")
        if features is not None:
            overrides += ("train.head_only=true", f"train.features_dir={features.root}")
        cfg = ws.config(base, overrides, run_dir)
        resume = None
        if (run_dir / "checkpoints" / "last.pt").is_file():
            resume = run_dir  # interrupted before: continue it
        elif run_dir.exists():
            shutil.rmtree(run_dir)  # failed before its first checkpoint
        result = train(cfg, resume, features=features)
        best = next((r for r in result.history if int(r["epoch"]) == result.best_epoch), None)
        if best is None:
            raise EmorecError(f"{candidate.id}: no epoch finished within the budget")
        return {"val_macro_f1": float(best["val_macro_f1"]), "val_accuracy": float(best["val_accuracy"]),
                "best_epoch": result.best_epoch, "epochs": result.epochs_completed,
                "note": "cut by the budget" if result.stopped_early and budget.remaining() < CUT_MARGIN_S else ""}


class Runners:
    """The runner of each kind of candidate, behind the one `run(candidate, budget)`."""

    def __init__(self, workspace: Workspace, board: Leaderboard,
                 fit_probe: Callable[..., Probe] = fit_logistic_regression):
        trainer = TrainerRunner(workspace)
        self.by_kind: dict[str, CandidateRunner] = {
            "logreg": ProbeRunner(workspace, fit_probe), "ensemble": EnsembleRunner(workspace, board),
            "head": trainer, "finetune": trainer,
        }

    def run(self, candidate: Candidate, budget: Budget) -> Scores:
        return self.by_kind[candidate.kind].run(candidate, budget)

