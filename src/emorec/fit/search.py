"""`fit(source, output, budget)`: find the best model for a dataset within a time budget.

The protocol (AutoGluon's `fit(time_limit=...)` is the model):
1. Splits: the dataset's own, or 80/10/10 per class (`data.*` of the config), written once to
   `OUTPUT/splits.csv` and reused by a resumed search (`state.py`).
2. Features: per backbone, one extraction of every stage pooled to mean and std, over the train and
   val images only, and the last-level mean vectors cut out of it; with several backbones, each
   feature set of all of them together is their caches joined (`feature_sets.py`).
3. Candidates (`candidates.py`): the linear probes of every feature set, with several backbones
   the ensemble of their best probes, then the trainer's heads; then, when the budget allows,
   an LP-FT fine-tune of the best one on images (`model.init_from`, frozen BatchNorm, layer
   decay, low backbone rate). Each runs through `runners.py`: a candidate and a budget in, its
   scores out.
4. The choice (`leaderboard.py`): probes are scored by 5-fold cross-validation over train + val
   (`crossval.py`), trainer runs on the val split; the best cross-validated probe leads unless a
   trainer run beats its val score by one standard error. A probe chosen is refit on train + val.
5. The chosen model is `OUTPUT/best/`, a normal run directory (`best_model.py`); only then is the
   test split read, once, to report the chosen model's score. No choice ever sees a test image.

This module is the loop: which candidate runs next, whether the budget still allows it (from
`budget.py`'s estimates), and what becomes of its scores. Every candidate is a trial of an Optuna
study (`study.py`, OUTPUT/study.db or --storage), and `OUTPUT/leaderboard.csv` is written from
them; a search run again with the same OUTPUT skips the finished ones (and resumes a trainer run
that was interrupted), with the same settings only, and within what its earlier runs left of the
budget (`state.py`, `budget.py`). Processes sharing a study each claim candidates no other has
started. Full fine-tunes run in rungs of epochs, every one's first rung before any goes on
(successive halving, `_full_finetunes`): after the LP-FT on small data; on large data
(FINETUNES_FIRST_TRAIN train images or more) before the extraction, with the whole budget to
spend; one far behind the frozen phase's leader at a rung stops there. With CV_MAX_VAL val
images or more, probes are scored on val alone. Candidate runs live under `OUTPUT/candidates/<id>/`
(logs and metrics; only the contenders for the lead, `Leaderboard.contenders`, keep their
best.pt). The trainer's own console output goes to `OUTPUT/fit.log`; the console shows one line
per candidate.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from emorec.config import Config, load_config
from emorec.errors import EmorecError
from emorec.file_lock import exclusive
from emorec.features.extract import ExtractionDeadline
from emorec.fit.backbones import BackboneChoice
from emorec.fit.best_model import BestModel, remove_checkpoints
from emorec.fit.budget import (
    Budget,
    Estimates,
    OutOfBudget,
    budget_for,
    budget_text,
    decode_seconds,
    duration_text,
    parse_duration,
    refit_reserve,
)
from emorec.fit.candidates import (
    FINETUNE,
    HEAD_EPOCHS,
    HEAD_KINDS,
    Candidate,
    FeatureSet,
    backbone_tag,
    ensemble_candidate,
    finetune_candidate,
    full_finetune_candidate,
    grid,
)
from emorec.fit.crossval import FOLDS, fold_count
from emorec.fit.feature_sets import (
    FEATURE_VARIANTS,
    as_feature_sets,
    combined_sets,
    extract_variants,
    member_sets,
    open_caches,
)
from emorec.fit.leaderboard import DONE, Leaderboard, one_standard_error
from emorec.fit.probe import fit_logistic_regression
from emorec.fit.runners import Runners, Workspace
from emorec.fit.state import SearchState, search_splits, train_and_val
from emorec.fit.study import FIRST_RUNG_EPOCHS, PRUNED, RUNG_FACTOR, RUNGS, CandidateStudy, rung_survivors

MIN_FINETUNE_EPOCHS = 2
# What a candidate is expected to take before one of its kind has run.
FIRST_CANDIDATE_S = 30.0
# fit.json: seconds every run of the search together has spent of its budget.
SPENT_KEY = "spent_s"
BEST_LOCK = ".best.lock"
# fit.json's record of what best/ holds and its test scores, read again under BEST_LOCK.
BEST_KEYS = ("best", "best_dir_of", "refit_of", "test", "test_of")
# Kept back for starting a fine-tune: the model build and the first batches.
FINETUNE_START_S = 20.0
# Probes are scored on val alone from this many val images on: the standard error of a val score
# is at most 0.5 / sqrt(n) (`one_standard_error`), under one point of macro-F1 from 2,500 images,
# finer than the differences the search acts on, so five more fits per probe buy nothing there.
CV_MAX_VAL = 2500
# From this many train images on, full fine-tunes run before the frozen-feature candidates and
# their rungs may take the whole budget: there they beat frozen features (FER-2013, 28k train
# images: faces.yaml 66.7% against the best frozen head's 60.0% for the same hour); below it,
# where probes win (Emotion6, 1.3k), they come last and get what the frozen phase leaves.
FINETUNES_FIRST_TRAIN = 10_000
# A full fine-tune whose score at a rung trails the frozen phase's leader (on val) by more than
# this stops there, whatever its rank among the fine-tunes. A rung's score is mid-schedule, so the
# margin is wide. Set between three measured first rungs (1 epoch; benchmarks/RESULTS.md): on
# Emotion6 the 224 px fine-tune trailed the probe by 0.24 (fold 0) and 0.135 (fold 1) and, trained
# on, still lost by 0.08 on both; on FER-2013 the 96 px one trailed the frozen head by 0.08 and won
# by 0.09.
TRAIL_MARGIN = 0.10


# Settings key prefix of each backbone (by tag); config keys that change how fast, not what, a
# search computes, or that fit sets itself (data.image_size is --image-size).
BACKBONE_KEY = "--backbone "
RUNTIME_KEYS = {"data.image_size", "data.num_workers", "data.pin_memory", "data.persistent_workers", "train.device",
                "train.output_dir", "train.name", "train.time_limit_s", "train.checkpoint_every_steps",
                "eval.batch_size"}


def describe_setting(key: str, value: Any) -> str:
    """A recorded setting as the command line gives it: '--image-size 224', '--set train.seed=42',
    '--backbone NAME=FILE', '--backbone NAME --random-init'."""
    if key.startswith(BACKBONE_KEY):
        if value.get("weights"):
            return f"--backbone {value['name']}={value['weights']}"
        return f"--backbone {value['name']}" + ("" if value.get("pretrained") else " --random-init")
    if key.startswith("--set "):
        return f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
    return f"{key} {value}"


def same_setting(key: str, old: Any, new: Any) -> bool:
    """Equal settings; a backbone's weights by content, so a weights file moved elsewhere still resumes."""
    if key.startswith(BACKBONE_KEY):
        return all(old.get(k) == new.get(k) for k in ("name", "pretrained", "sha256"))
    return old == new


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def release_memory() -> None:
    """What a failed piece of work held, handed back before the next one starts (an out-of-memory
    candidate must not leave the next one short)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class FitResult:
    output: Path
    best_dir: Path | None
    best: dict[str, str] | None  # the chosen candidate's leaderboard row
    test: dict[str, Any] | None  # the chosen model's test metrics (None: no test split or test=False)
    seconds: float
    rows: list[dict[str, str]] = field(default_factory=list)
    folds: int | None = None  # of the probes' cross-validation (None: no probe in the search)


def fit(source, output: str | Path, budget: str | float | Budget = "30m",
        backbones: list[BackboneChoice] | None = None, *,
        config: Config | None = None, image_size: int = 224, views: int = 2, heads: tuple[str, ...] = HEAD_KINDS,
        head_epochs: int = HEAD_EPOCHS, finetune: bool = True, finetune_epochs: int = 10, test: bool = True,
        cache_dir: str | Path | None = None, device: str = "auto", workers: int = 1, progress: bool = True,
        log: Callable[[str], None] = print, storage: str | None = None,
        finetune_sizes: tuple[int, ...] | None = None, cv_max_val: int = CV_MAX_VAL) -> FitResult:
    """Search for the best model of `source` within `budget` (seconds, or '30m', '1h'); see the
    module docstring. `backbones` default to the config's (the recipe's ResNet50, hub weights).
    `storage`: an Optuna RDB URL shared by several processes (default OUTPUT/study.db);
    `finetune_sizes`: input sizes of the full fine-tunes (None: chosen from the data, (): none);
    `cv_max_val`: from this many val images on, probes are scored on val only."""
    from emorec.features.cache import DEFAULT_CACHE_ROOT

    seconds = None if isinstance(budget, Budget) else parse_duration(budget)
    base = config or Config()
    choices = backbones or [BackboneChoice(base.model.backbone, base.model.weights, base.model.pretrained)]
    for choice in choices:
        choice.check()  # before the splits and any extraction: a wrong name or file costs no budget
    budget = budget if seconds is None else Budget(seconds)
    search = _Search(source, Path(output), budget, base, image_size, views,
                     tuple(heads), head_epochs, device, workers, progress, log,
                     Path(cache_dir) if cache_dir else Path(DEFAULT_CACHE_ROOT))
    search.storage, search.finetune_sizes, search.cv_max_val = storage, finetune_sizes, cv_max_val
    unknown = set(heads) - set(HEAD_KINDS)
    if unknown:
        raise EmorecError(f"unknown head kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(HEAD_KINDS)}")
    return search.run(choices, finetune, finetune_epochs, test)


class _Search:
    """One search: which candidate runs next, whether the budget allows it, what its scores change."""

    def __init__(self, source, output: Path, budget: Budget, base: Config, image_size: int, views: int,
                 heads: tuple[str, ...], head_epochs: int, device: str, workers: int, progress: bool, log,
                 cache_dir: Path):
        from emorec.devices import resolve_device

        self.source, self.output, self.budget = source, output, budget
        self.base = dataclasses.replace(base, data=dataclasses.replace(base.data, image_size=image_size),
                                        train=dataclasses.replace(base.train, device=device))
        self.image_size, self.views, self.heads, self.head_epochs = image_size, views, heads, head_epochs
        # Candidates per feature set: the same for every set, so the bar can count skipped sets.
        self.per_set = len(grid(FeatureSet("x", "x", "last", "avg"), heads))
        self.per_combined = self.per_set + int("logreg" in heads)  # the grid and the ensemble of probes
        self.device = resolve_device(device)
        self.workers, self.progress, self.log, self.cache_dir = workers, progress, log, cache_dir
        self.workspace = Workspace(output, self.base)
        self.spent: dict[str, float] = {}  # kind -> seconds of the last such candidate
        self.short: dict[str, float] = {}  # 'extraction' / 'candidate' -> the least it needed and did not get

    # -- the search ---------------------------------------------------------------------------

    def run(self, choices: list[BackboneChoice], finetune: bool, finetune_epochs: int, test: bool) -> FitResult:
        tags = self._tags(choices)
        self.output.mkdir(parents=True, exist_ok=True)
        self.state = SearchState.load(self.output, self.source)
        self.state.check_settings(self._settings(choices, tags), describe_setting, same_setting)
        # The budget covers the whole search: a resumed run has what the earlier ones left.
        self.budget.spent_before = float(self.state.get(SPENT_KEY, 0.0))
        try:
            return self._search(choices, tags, finetune, finetune_epochs, test)
        finally:
            self.state[SPENT_KEY] = round(self.budget.elapsed(), 1)
            self.state.save()

    def _search(self, choices: list[BackboneChoice], tags: list[str], finetune: bool, finetune_epochs: int,
                test: bool) -> FitResult:
        from tqdm import tqdm

        self.manifest = search_splits(self.source, self.output, self.base.data, self.state)
        self.study = CandidateStudy(self.output, self.storage)
        self.trial = None  # the claim of the candidate running now
        self.held: list[_FineTune] = []  # full fine-tunes claimed, between their rungs
        self.board = Leaderboard(self.output / "leaderboard.csv")
        self._sync()
        # The probe fitter is looked up here, not in runners.py, so a test can replace it in this module.
        self.runners = Runners(self.workspace, self.board, fit_logistic_regression)
        self.best = BestModel(self.workspace, self.state)
        splits = self.manifest.splits()
        self.counts = {s: len(self.manifest.subset(s).samples) for s in splits}
        if not self.counts.get("train") or not self.counts.get("val"):
            raise EmorecError(f"{self.source}: emorec fit needs train and val images (found {self.counts}); set "
                              "data.val_fraction > 0 or add a val split")
        self.folds, self.backbones = None, len(choices)
        self.workspace.cross_validate = self.counts["val"] < self.cv_max_val
        if "logreg" in self.heads and not self.workspace.cross_validate:
            self.log(f"probes scored on val only: {self.counts['val']} val images (>= {self.cv_max_val}) give a "
                     f"standard error under {100 * one_standard_error(self.counts['val']):.1f} points")
        elif "logreg" in self.heads:
            per_class = Counter(s.label for s in self.manifest.samples if s.split in ("train", "val"))
            self.folds, note = fold_count(per_class)
            if note:
                self.log(note)
            self.workspace.folds = self.folds
        self.state["folds"] = self.folds
        train_paths = [s.path for s in self.manifest.samples if s.split == "train"]
        self.estimates = Estimates(self.counts, self.image_size, self.views, self.device,
                                   decode_seconds(train_paths, self.image_size))
        # A leader of several backbones (their ensemble or joined features) runs every one of them:
        # reserved for one, the ensemble's test pass ran Emotion6's 20-minute fit 5% over.
        self.test_reserve = (sum(self.estimates.test_pass(c.name) for c in choices)
                             if test and self.counts.get("test") else 0.0)
        self.board.margin = one_standard_error(self.counts["val"])
        for row in self.board.rows:  # a resumed search's estimates start from what earlier runs measured
            if row["status"] == DONE and row["kind"] != "extract" and row["seconds"]:
                self.spent[row["kind"] + row["head"]] = float(row["seconds"])
        self.sizes, self.recipe = self._finetune_plan(finetune)
        self.recipe_config = load_config(self.recipe) if self.recipe else None
        # Large data: fine-tunes first (FER-2013's hour went to the frozen phase, 60.0% against
        # the face recipe's 66.7%, and no fine-tune ran); small data: the frozen phase first.
        self.finetunes_first = bool(self.sizes) and self.counts["train"] >= FINETUNES_FIRST_TRAIN
        if self.sizes and test and self.counts.get("test"):
            self.test_reserve = max(self.test_reserve, self._finetune_test_pass(choices[0].name))
        planned = (len(choices) * (1 + len(FEATURE_VARIANTS) * self.per_set)
                   + (len(FEATURE_VARIANTS) * self.per_combined if len(choices) > 1 else 0) + int(finetune)
                   + len(choices) * len(self.sizes))
        self.bar = tqdm(total=planned, desc="fit", unit="candidate", disable=not self.progress, dynamic_ncols=True)
        from emorec.training.result import TrainingInterrupted

        sets = self.workspace.sets
        try:
            if self.finetunes_first:
                self._full_finetunes(choices, tags)
            # Every backbone's probes, then their ensemble, then the trained heads: on Emotion6 the
            # ensemble of probes is the strongest frozen candidate, and behind 60 trained heads a
            # 20-minute fit of three backbones never reached it (benchmarks/RESULTS.md).
            probes = tuple(h for h in self.heads if h == "logreg")
            trained = tuple(h for h in self.heads if h != "logreg")
            extracted = []
            for index, (choice, tag) in enumerate(zip(choices, tags)):
                caches = self._features(choice, tag, first=index == 0)
                if caches:
                    extracted.append(caches)
                for features, cache in caches:
                    sets[features.name] = cache
                    self._run_all(grid(features, probes, self.head_epochs))
            combined = self._combined(extracted) if len(choices) > 1 else []
            for features, cache in combined:
                sets[features.name] = cache
                if probes:
                    self._run(ensemble_candidate(features, member_sets(features, extracted)))
            for features, _ in (pair for caches in extracted for pair in caches):
                self._run_all(grid(features, trained, self.head_epochs))
            for features, _ in combined:
                self._run_all(grid(features, self.heads, self.head_epochs))
            if finetune:
                self._finetune(finetune_epochs)
            if not self.finetunes_first:
                self._full_finetunes(choices, tags)
        except (TrainingInterrupted, KeyboardInterrupt) as e:
            import signal

            # The claims are let go: the next run tries them again (a fine-tune resumes its rungs).
            for trial in {id(t): t for t in [self.trial, *(e.trial for e in self.held)] if t is not None}.values():
                self.study.finish(trial, {**trial.user_attrs.get("row", {}), "status": "failed", "note": "interrupted"})
            self.trial, self.held = None, []
            self._sync()

            signum = e.exit_code - 128 if isinstance(e, TrainingInterrupted) else int(signal.SIGINT)
            done = sum(r["status"] == DONE for r in self.board.rows)
            board = self.output / "leaderboard.csv"
            raise TrainingInterrupted(f"interrupted; {done} finished candidates are in {board}; run the same emorec "
                                      "fit command (same --output) to continue", signum) from None
        finally:
            self.bar.close()
        self._sync()  # what other processes on the same study finished meanwhile
        leader = self.board.best()
        if leader is None:
            failed = [r for r in self.board.rows if r["status"] == "failed"]
            if failed:
                raise EmorecError(f"no candidate finished: {len(failed)} failed, {failed[0]['candidate']} with "
                                  f"{failed[0]['note']} (see {self.output / 'leaderboard.csv'} and fit.log)")
            raise EmorecError(self._too_short(*self._what_did_not_fit()))
        # Processes sharing OUTPUT (--storage) finish at about the same time with the same leader:
        # one at a time builds best/ and scores it, and the next finds both done in fit.json.
        with exclusive(self.output / BEST_LOCK, lambda: self.log("another process of this search is building "
                                                                 "best/: waiting for it")):
            self.state.update({k: v for k, v in SearchState.load(self.output, self.source).items() if k in BEST_KEYS})
            self.best.promote(leader)
            self.best.refit(leader)
            scores, holds = None, [self.state.get("best_dir_of"), self.state.get("refit_of")]
            if test and self.counts.get("test"):
                scored = self.state.get("test") and self.state.get("test_of") == holds
                scores = self.state["test"] if scored else self.best.test(self.device, self.workers)
            self.state.update(best=leader["candidate"], test=scores, test_of=holds if scores else None,
                              seconds=round(self.budget.elapsed(), 1))
            self.state.save()
        return FitResult(self.output, self.best.best_dir, leader, scores, self.budget.elapsed(), list(self.board.rows),
                         self.folds)

    def _reserve(self) -> float:
        """Seconds kept back for the end: the test pass, and a probe leader's refit on train + val
        (`refit_reserve`)."""
        probes = [float(r["seconds"]) for r in self.board.rows
                  if r["kind"] == "logreg" and r["status"] == DONE and r["seconds"] and r.get("cv_macro_f1")]
        return self.test_reserve + refit_reserve(probes, self.folds or FOLDS, self.backbones)

    def _short_of(self, what: str, seconds: float) -> None:
        """Note that `what` ('extraction' or 'candidate') needed `seconds` the budget did not have."""
        self.short[what] = min(seconds, self.short.get(what, seconds))

    def _what_did_not_fit(self) -> tuple[str, float]:
        """(why nothing finished, the seconds more it would have taken)."""
        if not self.workspace.sets:
            needed = self.short.get("extraction", 0.0)
            return f"extraction alone needs ~{duration_text(needed)} here", needed + FIRST_CANDIDATE_S
        needed = self.short.get("candidate", FIRST_CANDIDATE_S)
        return f"after the features, the first candidate needs ~{duration_text(needed)} more", needed

    def _too_short(self, why: str, more_s: float) -> str:
        """The one line of a budget that finishes nothing: why, and a --budget that would do."""
        before = self.budget.spent_before
        earlier = f" ({before:.0f} s of it spent by earlier runs in {self.output})" if before > 0 else ""
        total = self.budget.elapsed() + more_s + self._reserve()
        return (f"no candidate can finish within --budget {budget_text(self.budget.seconds)}{earlier}: {why}; use "
                f"--budget {budget_for(total)} or more")

    def _settings(self, choices: list[BackboneChoice], tags: list[str]) -> dict[str, Any]:
        """What the candidates' results depend on besides their ids, by the name the command line
        gives it (`describe_setting`): a resumed search must have the same (state.py)."""
        from emorec.features.cache import file_sha256

        settings: dict[str, Any] = {"--image-size": self.image_size, "--views": self.views,
                                    "--head-epochs": self.head_epochs}
        for choice, tag in zip(choices, tags):
            weights = [w for w in (choice.weights or "").split("+") if w]
            settings[f"{BACKBONE_KEY}{tag}"] = {
                "name": choice.name, "weights": choice.weights, "pretrained": choice.pretrained,
                "sha256": [file_sha256(w) for w in weights]}
        flat = _flatten(self.base.to_dict())
        settings.update({f"--set {key}": value for key, value in flat.items() if key not in RUNTIME_KEYS})
        return settings

    @staticmethod
    def _tags(choices: list[BackboneChoice]) -> list[str]:
        tags: list[str] = []
        for choice in choices:
            tag = backbone_tag(choice.name)
            tags.append(tag if tag not in tags else f"{tag}_{len(tags)}")
        return tags

    # -- features -----------------------------------------------------------------------------

    def _features(self, choice: BackboneChoice, tag: str, first: bool) -> list[tuple[FeatureSet, Any]]:
        """The feature sets of one backbone (extracted or found), or [] when the budget is spent
        or the extraction failed (its row says why)."""
        from emorec.training.result import TrainingInterrupted

        caches = open_caches(self.state["caches"].get(tag))
        if caches is None:
            row = Candidate(f"{tag}-features", "extract", FeatureSet(tag, choice.name, "all", "meanstd"), "-")
            estimate = self.estimates.extraction(choice.name)
            if not self.budget.allows(estimate, self._reserve()):
                self._short_of("extraction", estimate)
                if first and not self.workspace.sets and self.board.best() is None:
                    images = self.counts["train"] + self.counts["val"]
                    raise EmorecError(self._too_short(f"extraction alone needs ~{duration_text(estimate)} here "
                                                      f"({choice.name}, {images} images)",
                                                      estimate + FIRST_CANDIDATE_S))
                self._skip(row, f"extraction needs ~{estimate:.0f} s")
                self.bar.update(len(FEATURE_VARIANTS) * self.per_set)
                return []
            started = time.monotonic()
            self.log(f"features of {choice.name} at {self.image_size} px (~{estimate:.0f} s estimated, "
                     f"{self.budget.remaining():.0f} s left)")
            stopped = None
            try:
                caches = extract_variants(train_and_val(self.manifest), choice.name, choice.weights,
                                          choice.pretrained, image_size=self.image_size, views=self.views,
                                          cache_dir=self.cache_dir, cfg=self.base, workers=self.workers,
                                          progress=self.progress, device=str(self.device), log=self.log,
                                          time_limit_s=self.budget.remaining() - self._reserve())
            except TrainingInterrupted:
                raise
            except ExtractionDeadline as e:  # the budget's deadline: what it would have needed is known
                stopped, failed = (str(e), e.needed_s), None
            except Exception as e:  # noqa: BLE001 - this backbone is out; the others are still tried
                failed = {**row.row(), "status": "failed", "note": self._failure(e),
                          "seconds": time.monotonic() - started}
            else:
                failed = None
            if stopped is not None:
                release_memory()
                self.estimates.calibrate(estimate, stopped[1])
                self._short_of("extraction", stopped[1])
                self._skip(row, stopped[0])
                self.bar.update(len(FEATURE_VARIANTS) * self.per_set)
                return []
            if failed is not None:
                release_memory()
                self.study.record(failed)
                self._sync()
                self._print(failed, self.board.best())
                self.bar.update(1 + len(FEATURE_VARIANTS) * self.per_set)
                return []
            seconds = time.monotonic() - started
            self.estimates.calibrate(estimate, seconds)
            self.state["caches"][tag] = {k: str(c.root) for k, c in caches.items()}
            self.state.save()
            self.study.record({**row.row(), "seconds": seconds, "status": DONE,
                               "note": f"{len(caches)} feature sets, cache {next(iter(caches.values())).root.parent}"})
            self._sync()
            self.bar.update(1)
        return as_feature_sets(tag, choice.name, caches)

    def _combined(self, extracted: list[list[tuple[FeatureSet, Any]]]) -> list[tuple[FeatureSet, Any]]:
        """Every extracted backbone together; the variants not combined are counted as done."""
        from tqdm import tqdm

        out = combined_sets(extracted, self.cache_dir, self.log, tqdm.write)
        self.bar.update(self.per_combined * (len(FEATURE_VARIANTS) - len(out)))
        return out

    # -- candidates ---------------------------------------------------------------------------

    def _sync(self) -> None:
        """leaderboard.csv rewritten from the study's trials (this process's and any other's)."""
        self.board.replace(self.study.rows())

    def _claim(self, candidate: Candidate) -> bool:
        """True when this process now holds `candidate` (`self.trial`); False when it is finished
        or another process runs it."""
        self.trial = self.study.claim(candidate.id, _cells(candidate.row()))
        if self.trial is None:
            self.bar.update(1)
        return self.trial is not None

    def _run(self, candidate: Candidate) -> None:
        """A grid or ensemble candidate, unless finished before, held by another process, or not
        expected to fit the budget."""
        if not self._claim(candidate):
            return
        # What the last candidate of this kind took (trainer runs are also cut by train.time_limit_s).
        estimate = self.spent.get(candidate.kind + candidate.head, FIRST_CANDIDATE_S)
        if not self.budget.allows(estimate, self._reserve()):
            self._short_of("candidate", estimate)
            self._skip(candidate, f"~{estimate:.0f} s needed, {self.budget.remaining():.0f} s left")
            return
        self._execute(candidate)

    def _run_all(self, candidates: list[Candidate]) -> None:
        for candidate in candidates:
            self._run(candidate)

    def _finetune(self, max_epochs: int) -> None:
        """LP-FT of the leader, as a fine-tune of rungs: one epoch (its OneCycle planned from the
        estimate for as many as its share of the budget allows, at most `max_epochs`), then, like
        the last full fine-tune standing (`_last_rung`), as many more as that share holds at the
        epoch time it measured, the schedule re-planned to them. The forward-pass estimate was over
        2x short at 224 px on Emotion6 (10 epochs planned into ~440 s took 1,041 s): planned from it
        alone and given the rest of the budget, the LP-FT left the full fine-tunes no time."""
        leader = self.board.best()
        if leader is None or leader["kind"] == "finetune":
            return
        basis = self.workspace.candidates_dir / leader["candidate"]
        candidate = finetune_candidate(leader, basis)
        if not self._claim(candidate):
            return
        per_epoch = self.estimates.finetune_epoch(leader["backbone"])
        shares = 1 + len(self.sizes) * max(1, len({r["backbone"] for r in self.board.rows}))
        left = (self.budget.remaining() - self._reserve() - FINETUNE_START_S) / (shares if self.sizes else 1)
        epochs = min(max_epochs, int(left // per_epoch)) if per_epoch > 0 else 0
        if epochs < MIN_FINETUNE_EPOCHS:
            self._skip(candidate, f"an epoch on images takes ~{per_epoch:.0f} s, {max(left, 0):.0f} s left")
            return
        candidate.overrides = (*FINETUNE, f"model.init_from={basis}")
        entry = self._held_finetune(candidate, per_epoch)
        entry.rungs.setdefault("epochs", epochs)
        # The first epoch may take the whole share: longer, and no LP-FT fits.
        if not entry.reported(FIRST_RUNG_EPOCHS) and not self._run_rung(entry, FIRST_RUNG_EPOCHS,
                                                                         left + FINETUNE_START_S):
            return
        self._last_rung(entry, left - entry.seconds, max_epochs)

    def _finetune_plan(self, finetune: bool) -> tuple[tuple[int, ...], Path | None]:
        """(the full fine-tunes' input sizes, their recipe): the recipe `emorec demo` would pick
        for these images by `pick_demo_recipe`'s rule: configs/faces.yaml for small grayscale faces,
        otherwise configs/high_accuracy.yaml (the photo recipe that fine-tunes every layer from the
        first epoch; demo.yaml is a 5-epoch LP-FT); sizes upsampled 64 and 96 px for images of at
        most 64 px (48 px faces), else 160 and 224 px, unless `finetune_sizes` says."""
        from emorec.data.profile import profile_images
        from emorec.training.recipes import FACES_CONFIG, FACES_MAX_SIDE, HIGH_ACCURACY_CONFIG, looks_like_face_crops

        if not finetune or self.finetune_sizes == ():
            return (), None
        profile = profile_images([s.path for s in self.manifest.samples if s.split == "train"])
        small = 0 < profile.median_short_side <= FACES_MAX_SIDE
        recipe = FACES_CONFIG if looks_like_face_crops(profile) else HIGH_ACCURACY_CONFIG
        sizes = tuple(self.finetune_sizes) if self.finetune_sizes else ((64, 96) if small else (160, 224))
        return sizes, recipe

    def _finetune_test_pass(self, name: str) -> float:
        """The test pass of a full fine-tune at the largest size, through its recipe's TTA views."""
        from emorec.evaluation.tta import num_views

        ev = self.recipe_config.eval
        views = num_views(ev) if ev.tta else 1
        return self.estimates.test_pass(name, views=views, scale=(max(self.sizes) / self.image_size) ** 2)

    def _full_finetunes(self, choices: list[BackboneChoice], tags: list[str]) -> None:
        """Successive halving over the full fine-tunes, rung by rung: each one this process can
        claim trains to the first rung's epochs, then only the top 1/RUNG_FACTOR of those that
        reached the rung go on (`rung_survivors`; the others are pruned), to RUNG_FACTOR times the
        epochs; the last one standing (or each of those left at the last rung) trains on with its
        share of what is left. Each rung resumes the run's last checkpoint; a fine-tune's OneCycle
        is planned at its claim as if it were the one left, and re-planned before its last rung from
        the epoch time its earlier rungs measured (the forward-pass estimate was 1.3x short at 96 px
        on FER-2013), so the one that wins gets the whole decay within the budget. One that trails
        the frozen leader by more than TRAIL_MARGIN at a rung stops there (`_frozen_bar`)."""
        held = []
        for choice, tag in zip(choices, tags):
            for size in self.sizes:
                entry = self._claim_finetune(choice, tag, size)
                if entry is not None:
                    held.append(entry)
        if not held:
            return
        self._plan_epochs(held)
        live, rung = held, 0
        while live:
            if len(live) == 1 or rung == RUNGS - 1:
                for index, entry in enumerate(live):
                    share = (self.budget.remaining() - self._reserve() - FINETUNE_START_S) / (len(live) - index)
                    self._last_rung(entry, share, self.recipe_config.train.epochs)
                return
            target = FIRST_RUNG_EPOCHS * RUNG_FACTOR ** rung
            for entry in list(live):
                if entry.reported(target):
                    continue
                cost = (target - entry.epochs_done) * entry.epoch_s
                reserve = self._reserve()
                if not self.budget.allows(cost + FINETUNE_START_S, reserve):
                    note = (f"rung {rung + 1} needs ~{cost + FINETUNE_START_S:.0f} s and the end keeps "
                            f"~{reserve:.0f} s (test pass, refit), {self.budget.remaining():.0f} s left")
                    for rest in live[live.index(entry):]:
                        self._close_finetune(rest, DONE, f"stopped before rung {rung + 1} of {RUNGS} by the "
                                                         f"budget", note)
                    live = live[:live.index(entry)]
                    break
                # Twice the expected time at most, so one slow rung cannot eat the others' budget.
                if not self._run_rung(entry, target, 2 * cost + FINETUNE_START_S):
                    live.remove(entry)
            values = self.study.rung_values(target)
            going_on = rung_survivors(values, [e.candidate.id for e in live])
            bar, frozen = self._frozen_bar()
            for entry in live:
                if entry.candidate.id not in going_on:
                    self._close_finetune(entry, PRUNED, f"pruned after rung {rung + 1} of {RUNGS}: "
                                                        f"{entry.last_score:.4f}, {len(going_on)} of {len(values)} go on")
                elif entry.last_score < bar:
                    going_on.remove(entry.candidate.id)
                    self._close_finetune(entry, PRUNED, f"stopped after rung {rung + 1} of {RUNGS}: "
                                                        f"{entry.last_score:.4f}, more than {TRAIL_MARGIN} behind "
                                                        f"{frozen['candidate']} ({float(frozen['val_macro_f1']):.4f})")
            live = [e for e in live if e.candidate.id in going_on]
            rung += 1

    def _frozen_bar(self) -> tuple[float, dict | None]:
        """(the val macro-F1 a full fine-tune's rung must reach to go on, the candidate it is
        measured against): the leader's score less TRAIL_MARGIN while the leader is a frozen
        candidate or LP-FT; (-inf, None) before one finished (large data: the fine-tunes come first)."""
        leader = self.board.best()
        if leader is None or leader["head"] == "recipe" or leader.get("val_macro_f1") in (None, ""):
            return float("-inf"), None
        return float(leader["val_macro_f1"]) - TRAIL_MARGIN, leader

    def _claim_finetune(self, choice: BackboneChoice, tag: str, size: int) -> _FineTune | None:
        candidate = full_finetune_candidate(choice, tag, size, self.recipe)
        if not self._claim(candidate):
            return None
        # Its first epochs: the forward-pass estimate scaled by pixels, until a rung measures them.
        return self._held_finetune(candidate, self.estimates.finetune_epoch(choice.name) * (size / self.image_size) ** 2)

    def _held_finetune(self, candidate: Candidate, estimate: float) -> _FineTune:
        """The claimed fine-tune `candidate` (`self.trial`) between its rungs, with what an
        interrupted search's rungs left (rungs.json), told to the new trial."""
        run_dir = self.workspace.run_dir(candidate)
        entry = _FineTune(candidate, self.trial, run_dir, estimate)
        rungs = _read_rungs(run_dir)
        if rungs is not None:
            entry.rungs, entry.scores = rungs, dict(rungs.get("scores") or {})
            entry.epoch_s = float(rungs.get("epoch_s") or estimate)
            entry.epochs_done = int(rungs.get("epochs_done") or 0)
            for step, value in rungs["reports"]:
                entry.trial.report(value, step)
        self.held.append(entry)
        self.trial = None
        return entry

    def _plan_epochs(self, held: list[_FineTune]) -> None:
        """Each fine-tune's OneCycle length (train.epochs), set at its first rung: the epochs the
        budget holds for it if the others stop at their first rung (at most the recipe's)."""
        recipe_epochs = self.recipe_config.train.epochs
        left = self.budget.remaining() - self._reserve() - FINETUNE_START_S * len(held)
        first = {id(e): FIRST_RUNG_EPOCHS * e.epoch_s for e in held}
        for entry in held:
            if "epochs" in entry.rungs:
                continue
            mine = left - sum(cost for key, cost in first.items() if key != id(entry))
            entry.rungs["epochs"] = max(FIRST_RUNG_EPOCHS, min(recipe_epochs, int(mine // entry.epoch_s)))

    def _run_rung(self, entry: _FineTune, rung_epochs: int, limit_s: float) -> bool:
        """`entry` trained to epoch `rung_epochs` (at most its planned epochs) within `limit_s`
        seconds, its score reported at that step; False when it failed (it is closed as failed)."""
        from emorec.training.result import TrainingInterrupted

        self.trial = entry.trial
        stop_after = min(rung_epochs, entry.rungs["epochs"])
        limit = min(self.budget.remaining() - self._reserve(), limit_s)
        entry.candidate.settings["epochs"] = entry.rungs["epochs"]
        entry.candidate.overrides = (*entry.base_overrides, f"train.epochs={entry.rungs['epochs']}",
                                     f"train.stop_after_epoch={stop_after}", f"data.num_workers={self.workers}",
                                     f"train.device={self.base.train.device}")
        started = time.monotonic()
        try:
            with self.workspace.quiet():
                scores = self.runners.run(entry.candidate, self.budget.share(max(1.0, limit)))
        except TrainingInterrupted:
            raise
        except Exception as e:  # noqa: BLE001 - like _execute: this fine-tune ends, the search goes on
            failure = self._failure(e)
            release_memory()
            entry.seconds += time.monotonic() - started
            self._close_finetune(entry, "failed", failure)
            return False
        seconds = time.monotonic() - started
        done = int(scores.get("epochs") or stop_after)
        if done > entry.epochs_done:
            entry.epoch_s = seconds / (done - entry.epochs_done)
        entry.seconds += seconds
        entry.scores, entry.epochs_done = scores, done
        entry.rungs["reports"].append((rung_epochs, float(scores["val_macro_f1"])))
        entry.rungs.update(epoch_s=entry.epoch_s, epochs_done=done, scores=scores)
        _write_rungs(entry.run_dir, entry.rungs)
        entry.trial.report(float(scores["val_macro_f1"]), rung_epochs)
        self.trial = None
        return True

    def _last_rung(self, entry: _FineTune, share: float, max_epochs: int) -> None:
        """The one left (or one of those left at the last rung, or the LP-FT): trains on with
        `share` seconds, its OneCycle re-planned to the epochs they hold at its measured epoch time
        (at most `max_epochs`)."""
        more = int(share // entry.epoch_s) if entry.epoch_s > 0 else 0
        if more < 1:
            if entry.scores:
                entry.rungs["epochs"] = entry.epochs_done  # what it is: no more epochs of its schedule will run
                self._close_finetune(entry, DONE, f"{len(entry.rungs['reports'])} rungs; the budget holds no more "
                                                  f"epochs (~{entry.epoch_s:.0f} s each, {max(share, 0):.0f} s left)")
            else:
                self._close_finetune(entry, "skipped", f"budget: an epoch takes ~{entry.epoch_s:.0f} s, "
                                                       f"{max(share, 0):.0f} s left")
            return
        entry.rungs["epochs"] = min(max_epochs, max(entry.epochs_done + more, FIRST_RUNG_EPOCHS))
        if entry.epochs_done >= entry.rungs["epochs"] and entry.scores:
            self._close_finetune(entry, DONE, f"{len(entry.rungs['reports'])} rungs, all its epochs")
            return
        cost = (entry.rungs["epochs"] - entry.epochs_done) * entry.epoch_s
        if self._run_rung(entry, entry.rungs["epochs"], 2 * max(cost, share / 2) + FINETUNE_START_S):
            self._close_finetune(entry, DONE, f"{len(entry.rungs['reports'])} rungs, {entry.epochs_done} of "
                                              f"{entry.rungs['epochs']} epochs")

    def _close_finetune(self, entry: _FineTune, status: str, note: str, why: str = "") -> None:
        """Record `entry` as done or pruned (with its last scores), failed or skipped."""
        self.trial = entry.trial
        if entry in self.held:
            self.held.remove(entry)
        if status in (DONE, PRUNED) and not entry.scores:
            status, note = "skipped", f"budget: {why or note}"
        if status == "skipped":
            self._skip(entry.candidate, note.removeprefix("budget: "))
            return
        entry.candidate.settings["epochs"] = entry.rungs.get("epochs", "")
        self._finish(entry.candidate, {**entry.scores, "status": status, "note": note, "seconds": entry.seconds},
                     entry.run_dir)

    def _execute(self, candidate: Candidate) -> None:
        """Run `candidate` (claimed) with what is left of the budget (less the test pass's
        reserve) and record it: done with its scores, or failed with the first line of its error."""
        from emorec.training.result import TrainingInterrupted

        run_dir = self.workspace.run_dir(candidate)
        started = time.monotonic()
        failure = None
        try:
            with self.workspace.quiet():
                allowed = self.budget.share(max(1.0, self.budget.remaining() - self._reserve()))
                row = {**self.runners.run(candidate, allowed), "status": DONE}
        except TrainingInterrupted:
            raise
        except OutOfBudget as e:  # started, then found the rest would not fit: not run, not failed
            self._short_of("candidate", e.needed_s)
            self._skip(candidate, str(e))
            return
        except Exception as e:  # noqa: BLE001 - one candidate's failure (out of memory, a bug) ends only that one
            failure = self._failure(e)
        if failure is not None:
            release_memory()  # out of the except block: the traceback's frames (and their tensors) are gone
            self._finish(candidate, {"status": "failed", "note": failure, "seconds": time.monotonic() - started},
                         run_dir)
            return
        self._finish(candidate, {**row, "seconds": time.monotonic() - started}, run_dir)

    def _failure(self, error: Exception) -> str:
        """The one-line reason of a failed candidate or extraction; an unexpected error's traceback
        goes to fit.log."""
        import traceback

        if not isinstance(error, EmorecError):
            with open(self.output / "fit.log", "a", encoding="utf-8") as f:
                f.write("".join(traceback.format_exception(error)))
        text = str(error).strip()
        line = text.splitlines()[0] if text else ""
        reason = line if isinstance(error, EmorecError) else f"{type(error).__name__}: {line}".rstrip(": ")
        return reason[:200]

    def _finish(self, candidate: Candidate, result: dict, run_dir: Path) -> None:
        row = _cells({**candidate.row(), **result})
        before = {r["candidate"] for r in self.board.contenders()}
        self.study.finish(self.trial, row)
        self.trial = None
        self._sync()
        if result.get("status") == DONE:
            self.spent[candidate.kind + candidate.head] = float(result.get("seconds", 0.0))
        leader = self.board.best()
        contenders = {r["candidate"] for r in self.board.contenders()}
        if leader is not None and (self.workspace.candidates_dir / leader["candidate"]).is_dir():
            # the new row, or an earlier contender the new row handed the lead back to (a leader run
            # by a process with another OUTPUT is not here: the end of the search says so)
            self.best.promote(leader)
        for gone in before - contenders:
            remove_checkpoints(self.workspace.candidates_dir / gone, keep_best=False)
        remove_checkpoints(run_dir, keep_best=candidate.id in contenders)
        self._print(row, leader)
        self.bar.update(1)

    def _skip(self, candidate: Candidate, why: str) -> None:
        """Not run for the budget: its claim closed (tried again by the next run)."""
        row = _cells({**candidate.row(), "status": "skipped", "note": f"budget: {why}"})
        if self.trial is not None:
            self.study.finish(self.trial, row)
            self.trial = None
        elif self.study.finished(candidate.id) is None:
            self.study.record(row)
        self._sync()
        self._print(row, self.board.best())
        self.bar.update(1)

    def _print(self, row: dict, leader: dict | None) -> None:
        from tqdm import tqdm

        if row.get("status") == DONE:
            mark = " *" if leader is not None and leader["candidate"] == row["candidate"] else ""
            cv = f"  cv F1 {float(row['cv_macro_f1']):.4f}" if row.get("cv_macro_f1") not in (None, "") else ""
            text = (f"{row['candidate']:<48} val F1 {float(row.get('val_macro_f1', 'nan')):.4f}  acc "
                    f"{float(row.get('val_accuracy', 'nan')):.4f}{cv}  {float(row.get('seconds', 0)):6.0f} s{mark}")
        else:
            text = f"{row['candidate']:<48} {row.get('status')}: {row.get('note', '')}"
        tqdm.write(text)


@dataclass(eq=False)  # one claim: compared by identity
class _FineTune:
    """A claimed fine-tune (full, or the LP-FT) between its rungs: its trial, rung plan
    (rungs.json) and scores."""

    candidate: Candidate
    trial: Any
    run_dir: Path
    epoch_s: float  # seconds per epoch: estimated, then measured by its rungs
    rungs: dict = field(default_factory=lambda: {"reports": []})
    scores: dict = field(default_factory=dict)
    epochs_done: int = 0
    seconds: float = 0.0
    base_overrides: tuple[str, ...] = ()

    def __post_init__(self):
        self.base_overrides = self.base_overrides or self.candidate.overrides

    def reported(self, rung_epochs: int) -> bool:
        return any(step >= rung_epochs for step, _ in self.rungs["reports"])

    @property
    def last_score(self) -> float:
        return float(self.scores.get("val_macro_f1", float("nan")))


def _cells(row: dict) -> dict[str, str]:
    """A row as the leaderboard writes it (and the study stores it): strings by column."""
    from emorec.fit.leaderboard import COLUMNS, _cell

    return {k: _cell(row.get(k, "")) for k in COLUMNS}


RUNGS_FILE = "rungs.json"


def _read_rungs(run_dir: Path) -> dict | None:
    """A fine-tune's rung plan and reports so far, when its run has a checkpoint to resume."""
    path = run_dir / RUNGS_FILE
    if path.is_file() and (run_dir / "checkpoints" / "last.pt").is_file():
        return json.loads(path.read_text())
    return None


def _write_rungs(run_dir: Path, rungs: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUNGS_FILE).write_text(json.dumps(rungs))

