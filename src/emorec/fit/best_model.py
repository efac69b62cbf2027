"""OUTPUT/best/: the chosen model as a normal run directory, and its one look at the test split.

While the search runs, best/ is a copy of the leader's run directory (`promote`), its
manifest.csv holding every split (so `emorec evaluate OUTPUT/best --split test` works for
head-only runs too). A cross-validated leader (a probe or an ensemble of probes) is then refit on
train + val (`refit`): its estimate is the cross-validated score, since val is now seen. Only
then is the test split read, once (`test`). best/ is always built beside it first and renamed,
so an interruption never leaves half a model there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from emorec.errors import EmorecError
from emorec.fit.crossval import ensemble_probe, train_val_views
from emorec.fit.feature_sets import COMBINED_TAG
from emorec.fit.probe import LINEAR_HEAD, fit_probe_arrays, write_probe_run
from emorec.fit.runners import MEMBERS_FILE, Workspace
from emorec.fit.state import SPLITS_FILE, SearchState


class BestModel:
    """OUTPUT/best/; `state` (fit.json) records which candidate it holds (`best_dir_of`) and
    whether it is that candidate's refit (`refit_of`, None for a copy of its run), so a resumed
    search does neither twice."""

    def __init__(self, workspace: Workspace, state: SearchState):
        self.workspace, self.state = workspace, state
        self.output = workspace.output
        self.best_dir = self.output / "best"

    def promote(self, leader: dict[str, str]) -> None:
        """best/ = a copy of the leader's run directory."""
        if self.state.get("best_dir_of") == leader["candidate"] and (self.best_dir / "checkpoints").is_dir():
            return
        source = self.workspace.candidates_dir / leader["candidate"]
        if not source.is_dir():
            raise EmorecError(f"the leading candidate {leader['candidate']} ran in a process with another OUTPUT than "
                              f"{self.output}: processes sharing a --storage need one OUTPUT folder (a shared disk)")
        if not (source / "checkpoints" / "best.pt").is_file():
            raise EmorecError(f"the leading candidate's checkpoint is missing: {source}/checkpoints/best.pt; delete "
                              f"its row from {self.output / 'leaderboard.csv'} and run the search again")
        # best/ is now the train-only run: a refit made before (the lead can pass to another
        # candidate and come back, also across resumes) is gone with what it replaced.
        self.install(lambda tmp: shutil.copytree(source, tmp), best_dir_of=leader["candidate"], refit_of=None)

    def refit(self, leader: dict[str, str]) -> None:
        """A cross-validated leader refit on train + val (both views of every image) into best/,
        unless best/ already holds that refit."""
        done = (self.state.get("refit_of") == self.state.get("best_dir_of") == leader["candidate"]
                and (self.best_dir / "checkpoints").is_dir())
        # A probe chosen on val alone (a large val split, `search.CV_MAX_VAL`) stays as it ran:
        # its val score is its estimate, which a refit on val would spoil.
        if leader["kind"] not in ("logreg", "ensemble") or done or not leader.get("cv_macro_f1"):
            return
        ws = self.workspace
        source = ws.candidates_dir / leader["candidate"]
        set_name = f"{leader['candidate'].split('-')[0]}-{leader['feature_levels']}-{leader['pooling']}"
        seed = ws.base.train.seed
        if leader["kind"] == "logreg":
            cache = ws.sets[set_name]
            x, y = train_val_views(cache)
            probe = fit_probe_arrays(x, y, float(leader["C"]), len(cache.label_names), seed=seed)
            what = f"linear probe (C={leader['C']})"
        else:
            members = json.loads((source / MEMBERS_FILE).read_text())
            cache = ws.sets[f"{COMBINED_TAG}-{leader['feature_levels']}-{leader['pooling']}"]
            probes = []
            for m in members:
                x, y = train_val_views(ws.sets[m["set"]])
                probes.append(fit_probe_arrays(x, y, m["C"], len(cache.label_names), seed=seed))
            probe = ensemble_probe(probes, ws.ensemble_plan([m["set"] for m in members], leader["feature_levels"],
                                                            leader["pooling"]))
            what = f"ensemble of linear probes ({', '.join(m['candidate'] for m in members)}), logits averaged"
        self.install(lambda tmp: write_probe_run(
            ws.config(ws.base, LINEAR_HEAD, tmp), cache, probe, tmp,
            describe=f"{what}, refit on the train + val images (centre and mirrored views) after "
                     f"{leader['candidate']} was chosen by {ws.folds}-fold cross-validation",
            extra={"refit": "train+val", "cv_macro_f1": float(leader["cv_macro_f1"]), "folds": ws.folds,
                   "note": "the val images were seen in training: cv_macro_f1 is the estimate"}),
            best_dir_of=leader["candidate"], refit_of=leader["candidate"])

    def install(self, write: Callable[[Path], Any], **state) -> None:
        """best/ replaced by what `write` puts in a fresh folder, plus every split as its
        manifest.csv; `state` is recorded in fit.json once it is in place."""
        tmp = self.output / f"best.tmp-{os.getpid()}"  # processes sharing OUTPUT (--storage) each build their own
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        shutil.copyfile(self.output / SPLITS_FILE, tmp / "manifest.csv")
        for attempt in range(3):  # another process may put its best/ back in between
            shutil.rmtree(self.best_dir, ignore_errors=True)
            try:
                tmp.rename(self.best_dir)
                break
            except OSError:
                if attempt == 2:
                    raise
        self.state.update(state)
        self.state.save()

    def test(self, device, workers: int) -> dict[str, Any]:
        """best/'s test scores: the first and only time the test images are read."""
        from emorec.evaluation.evaluate import evaluate_run

        with self.workspace.quiet():
            result = evaluate_run(self.best_dir, split="test", device=str(device), num_workers=workers)
        metrics, tta = result.metrics, result.metrics_tta
        out = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
               "per_class_f1": {name: m["f1"] for name, m in metrics["per_class"].items()},
               "num_samples": metrics["num_samples"], "report": str(result.report_path)}
        if tta:
            out.update(tta_accuracy=tta["accuracy"], tta_macro_f1=tta["macro_f1"])
        return out


def remove_checkpoints(run_dir: Path, keep_best: bool) -> None:
    """A finished candidate keeps logs and metrics; a contender for the lead also its best.pt."""
    folder = run_dir / "checkpoints"
    for name in ("last.pt", "last.prev.pt", *(() if keep_best else ("best.pt",))):
        (folder / name).unlink(missing_ok=True)
