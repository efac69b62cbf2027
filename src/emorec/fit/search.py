"""`fit(source, output, budget)`: find the best model for a dataset within a time budget.

The protocol (AutoGluon's `fit(time_limit=...)` is the model):
1. Splits: the dataset's own, or 80/10/10 per class (`data.*` of the config), written once to
   `OUTPUT/splits.csv` and reused by a resumed search.
2. Features: per backbone, one extraction of every stage pooled to mean and std, over the train and
   val images only (`features/extract.py`, cached), and the last-level mean vectors cut out of it
   (`features/variants.py`). With several backbones, each feature set of all of them together
   is their caches joined (`features/combine.py`: the backbone group `a+b` computes the same).
3. Candidates (`candidates.py`): the linear probe and the trainer's heads on each feature set,
   and with several backbones the ensemble of their best probes; then, when the budget allows,
   an LP-FT fine-tune of the best one on images (`model.init_from`, frozen BatchNorm, layer
   decay, low backbone rate).
4. The choice (`leaderboard.py`): probes are scored by 5-fold cross-validation over train + val
   (`crossval.py`), trainer runs on the val split; the best cross-validated probe leads unless a
   trainer run beats its val score by one standard error. A probe chosen is refit on train + val.
5. The chosen model is `OUTPUT/best/`, a normal run directory; only then is the test split read,
   once, to report the chosen model's score. No choice ever sees a test image.

Every finished candidate is a row of `OUTPUT/leaderboard.csv`; a search run again with the same
OUTPUT skips them (and resumes a trainer run that was interrupted). Candidate runs live under
`OUTPUT/candidates/<id>/` (logs and metrics; only the leader keeps its checkpoint). The trainer's
own console output goes to `OUTPUT/fit.log`; the console shows one line per candidate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emorec.config import Config, apply_overrides, config_from_dict, load_config
from emorec.errors import EmorecError
from emorec.fit.budget import Budget, parse_duration, seconds_per_image
from emorec.fit.candidates import HEAD_EPOCHS, HEAD_KINDS, Candidate, FeatureSet, backbone_tag, grid
from emorec.fit.crossval import FOLDS, ensemble_probe, out_of_fold_logits, train_val_views
from emorec.fit.leaderboard import DONE, Leaderboard, one_standard_error
from emorec.fit.probe import LINEAR_HEAD, Probe, fit_logistic_regression, fit_probe_arrays, write_probe_run
from emorec.training.validation import macro_f1

# Where the multi-level extraction is cut into the feature sets the grid compares.
FEATURE_VARIANTS = (("last", "avg"), ("all", "meanstd"))
# LP-FT on images, after the head: the recipe's light augmentation, a tenth of the head's peak rate
# for the backbone's top stage and 0.7 less per stage below, pretrained BatchNorm statistics.
FINETUNE = ("train.head_only=false", "train.features_dir=null", "model.freeze_backbone_epochs=0",
            "model.backbone_lr_scale=0.1", "optim.layer_decay=0.7", "model.freeze_bn=auto", "optim.lr=3e-5",
            "optim.max_lr=3e-4", "augment.auto_augment=none", "augment.mix_prob=0.0", "augment.random_erasing=0.0",
            "train.ema=false", "train.patience=0")
# Safety factors of the estimates: forward passes measured on random input miss JPEG decoding and
# the loader; a training step is about three forward passes.
OVERHEAD = 1.3
TRAIN_STEP_FORWARDS = 3.0
DECODE_S = 0.01
MIN_FINETUNE_EPOCHS = 2
# The feature-set tag of every backbone together (ids: "combined-all-meanstd-linear-strong").
COMBINED_TAG = "combined"
# The members' best probes averaged (ids: "ensemble-last-avg-logreg"), and what a probe keeps for it.
ENSEMBLE_TAG = "ensemble"
CV_FILE = "crossval.npz"
MEMBERS_FILE = "members.json"


@dataclass
class BackboneChoice:
    """A backbone to try: a timm name with a local weights file, timm's hub weights, or (tests,
    smoke runs) random weights."""

    name: str
    weights: str | None = None
    pretrained: bool = True

    @classmethod
    def parse(cls, text: str, random_init: bool = False) -> BackboneChoice:
        """'NAME' (hub weights) or 'NAME=WEIGHTS_FILE' (local)."""
        name, _, weights = text.partition("=")
        if not name.strip():
            raise EmorecError(f"--backbone '{text}': write NAME or NAME=WEIGHTS_FILE, e.g. "
                              "tf_efficientnet_lite0=../shared/weights/tf_efficientnet_lite0/model.safetensors")
        if weights and not Path(weights).is_file():
            raise EmorecError(f"--backbone {text}: weights file not found: {weights}; pass an existing .safetensors "
                              "or .pth file")
        return cls(name.strip(), weights or None, not random_init and not weights)


@dataclass
class FitResult:
    output: Path
    best_dir: Path | None
    best: dict[str, str] | None  # the chosen candidate's leaderboard row
    test: dict[str, Any] | None  # the chosen model's test metrics (None: no test split or test=False)
    seconds: float
    rows: list[dict[str, str]] = field(default_factory=list)


def fit(source, output: str | Path, budget: str | float | Budget = "30m",
        backbones: list[BackboneChoice] | None = None, *,
        config: Config | None = None, image_size: int = 224, views: int = 2, heads: tuple[str, ...] = HEAD_KINDS,
        head_epochs: int = HEAD_EPOCHS, finetune: bool = True, finetune_epochs: int = 10, test: bool = True,
        cache_dir: str | Path | None = None, device: str = "auto", workers: int = 1, progress: bool = True,
        log: Callable[[str], None] = print) -> FitResult:
    """Search for the best model of `source` within `budget` (seconds, or '30m', '1h'); see the
    module docstring. `backbones` default to the config's (the recipe's ResNet50, hub weights)."""
    from emorec.features.cache import DEFAULT_CACHE_ROOT

    budget = budget if isinstance(budget, Budget) else Budget(parse_duration(budget))
    search = _Search(source, Path(output), budget, config or Config(), image_size, views,
                     tuple(heads), head_epochs, device, workers, progress, log,
                     Path(cache_dir) if cache_dir else Path(DEFAULT_CACHE_ROOT))
    unknown = set(heads) - set(HEAD_KINDS)
    if unknown:
        raise EmorecError(f"unknown head kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(HEAD_KINDS)}")
    choices = backbones or [BackboneChoice(search.base.model.backbone, search.base.model.weights,
                                           search.base.model.pretrained)]
    return search.run(choices, finetune, finetune_epochs, test)


class _Search:
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
        self.sets: dict[str, Any] = {}  # feature set name -> its cache, for ensembles and the refit
        self._views_of: tuple[str, Any] | None = None  # the last cache's train + val views
        self.device = resolve_device(device)
        self.workers, self.progress, self.log, self.cache_dir = workers, progress, log, cache_dir
        self.candidates_dir = output / "candidates"
        self.best_dir = output / "best"
        self.state_path = output / "fit.json"
        self.seconds_per_image: dict[str, float] = {}
        self.calibration = 1.0  # actual / estimated extraction time, from the last extraction
        self.spent: dict[str, float] = {}  # kind -> seconds of the last such candidate

    # -- the search ---------------------------------------------------------------------------

    def run(self, choices: list[BackboneChoice], finetune: bool, finetune_epochs: int, test: bool) -> FitResult:
        from tqdm import tqdm

        self.output.mkdir(parents=True, exist_ok=True)
        self.state = self._load_state()
        self.manifest = self._splits()
        self.board = Leaderboard(self.output / "leaderboard.csv")
        splits = self.manifest.splits()
        self.counts = {s: len(self.manifest.subset(s).samples) for s in splits}
        if not self.counts.get("train") or not self.counts.get("val"):
            raise EmorecError(f"{self.source}: emorec fit needs train and val images (found {self.counts}); set "
                              "data.val_fraction > 0 or add a val split")
        self.test_reserve = self._test_reserve(choices[0]) if test and self.counts.get("test") else 0.0
        tags = self._tags(choices)
        self.board.margin = one_standard_error(self.counts["val"])
        planned = (len(choices) * (1 + len(FEATURE_VARIANTS) * self.per_set)
                   + (len(FEATURE_VARIANTS) * self.per_combined if len(choices) > 1 else 0) + int(finetune))
        self.bar = tqdm(total=planned, desc="fit", unit="candidate", disable=not self.progress, dynamic_ncols=True)
        from emorec.training.result import TrainingInterrupted

        try:
            extracted = []
            for index, (choice, tag) in enumerate(zip(choices, tags)):
                caches = self._features(choice, tag, first=index == 0)
                if caches:
                    extracted.append(caches)
                for features, cache in caches:
                    self.sets[features.name] = cache
                    for candidate in grid(features, self.heads, self.head_epochs):
                        self._run(candidate, cache)
            if len(choices) > 1:
                for features, cache in self._combined(extracted):
                    self.sets[features.name] = cache
                    for candidate in grid(features, self.heads, self.head_epochs):
                        self._run(candidate, cache)
                    if "logreg" in self.heads:
                        self._run(self._ensemble_candidate(features, extracted), cache)
            if finetune:
                self._finetune(finetune_epochs)
        except (TrainingInterrupted, KeyboardInterrupt) as e:
            import signal

            signum = e.exit_code - 128 if isinstance(e, TrainingInterrupted) else int(signal.SIGINT)
            done = sum(r["status"] == DONE for r in self.board.rows)
            board = self.output / "leaderboard.csv"
            raise TrainingInterrupted(f"interrupted; {done} finished candidates are in {board}; run the same emorec "
                                      "fit command (same --output) to continue", signum) from None
        finally:
            self.bar.close()
        leader = self.board.best()
        if leader is None:
            raise EmorecError(f"no candidate finished within the budget of {self.budget.seconds:.0f} s; give a "
                              f"larger --budget (see {self.output / 'leaderboard.csv'})")
        self._promote(leader)
        self._refit(leader)
        scores = self._test(leader) if test and self.counts.get("test") else None
        self.state.update(best=leader["candidate"], test=scores, seconds=round(self.budget.elapsed(), 1))
        self._save_state()
        return FitResult(self.output, self.best_dir, leader, scores, self.budget.elapsed(), list(self.board.rows))

    # -- splits and state ---------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        source = str(self.source)
        if state.get("source") not in (None, source):
            raise EmorecError(f"{self.output} holds a search of {state['source']}, not {source}; pass another "
                              "--output (or the same source to resume it)")
        state["source"] = source
        state.setdefault("caches", {})
        return state

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=1, default=str))
        tmp.replace(self.state_path)

    def _splits(self):
        """The search's splits: OUTPUT/splits.csv when resuming, else the source split once."""
        from emorec.data.manifest import read_manifest
        from emorec.data.split import ensure_splits

        path = self.output / "splits.csv"
        if path.is_file():
            return read_manifest(str(path))
        manifest = ensure_splits(read_manifest(str(self.source), self.base.data.images_root), self.base.data)
        manifest.to_csv(path)
        self._save_state()
        return read_manifest(str(path))

    def _search_manifest(self):
        """Train and val only: the test images are never decoded during the search."""
        from emorec.data.manifest import Manifest

        return Manifest([s for s in self.manifest.samples if s.split in ("train", "val")], self.manifest.source)

    @staticmethod
    def _tags(choices: list[BackboneChoice]) -> list[str]:
        tags: list[str] = []
        for choice in choices:
            tag = backbone_tag(choice.name)
            tags.append(tag if tag not in tags else f"{tag}_{len(tags)}")
        return tags

    # -- estimates ----------------------------------------------------------------------------

    def _spi(self, name: str) -> float:
        if name not in self.seconds_per_image:
            self.seconds_per_image[name] = seconds_per_image(name, self.image_size, self.device)
        return self.seconds_per_image[name]

    def _test_reserve(self, choice: BackboneChoice) -> float:
        """Kept back for the final test pass: model build, the images through two TTA views, report."""
        return 15.0 + OVERHEAD * self.counts["test"] * (2 * self._spi(choice.name) + DECODE_S)

    def _extraction_estimate(self, name: str) -> float:
        forwards = self.counts["train"] * (2 + self.views) + self.counts["val"] * 2
        images = self.counts["train"] + self.counts["val"]
        return 10.0 + self.calibration * OVERHEAD * (forwards * self._spi(name) + images * (1 + self.views) * DECODE_S)

    # -- features -----------------------------------------------------------------------------

    def _features(self, choice: BackboneChoice, tag: str, first: bool) -> list[tuple[FeatureSet, Any]]:
        """The feature sets of one backbone (extracted or found), or [] when the budget is spent."""
        from emorec.features.cache import INDEX_NAME, FeatureCache
        from emorec.features.extract import extract_features
        from emorec.features.variants import derive_cache

        row_id = f"{tag}-features"
        known = self.state["caches"].get(tag)
        if known and all((Path(p) / INDEX_NAME).is_file() for p in known.values()):
            caches = {k: FeatureCache(p) for k, p in known.items()}
        else:
            estimate = self._extraction_estimate(choice.name)
            if not self.budget.allows(estimate, self.test_reserve):
                if first:
                    raise EmorecError(f"--budget {self.budget.seconds:.0f} s is too short: extracting {choice.name} "
                                      f"features of {self.counts['train'] + self.counts['val']} images takes ~"
                                      f"{estimate:.0f} s here; give at least "
                                      f"{1.5 * estimate + self.test_reserve:.0f} s")
                self._skip(Candidate(row_id, "extract", FeatureSet(tag, choice.name, "all", "meanstd"), "-"),
                           f"extraction needs ~{estimate:.0f} s")
                self.bar.update(len(FEATURE_VARIANTS) * len(grid(FeatureSet(tag, "", "last", "avg"), self.heads)))
                return []
            started = time.monotonic()
            self.log(f"features of {choice.name} at {self.image_size} px (~{estimate:.0f} s estimated, "
                     f"{self.budget.remaining():.0f} s left)")
            kwargs = dict(backbone=choice.name, weights=choice.weights, pretrained=choice.pretrained,
                          image_size=self.image_size, augmented_views=self.views, grid=0, cache_dir=self.cache_dir,
                          cfg=self.base, batch_size=32, num_workers=self.workers, progress=self.progress,
                          device=str(self.device), log=self.log)
            try:
                full = extract_features(self._search_manifest(), feature_levels="all", pooling="meanstd", **kwargs)
                caches = {f"{levels}-{pooling}": (full if (levels, pooling) == ("all", "meanstd") else
                                                  derive_cache(full, levels, pooling, self.cache_dir, log=self.log))
                          for levels, pooling in FEATURE_VARIANTS}
            except EmorecError as e:
                if "feature_levels=last" not in str(e):
                    raise
                self.log(f"{choice.name}: {e}; last-level features only")
                caches = {"last-avg": extract_features(self._search_manifest(), **kwargs)}
            seconds = time.monotonic() - started
            self.calibration = max(0.5, min(3.0, seconds / max(estimate, 1e-6) * self.calibration))
            self.state["caches"][tag] = {k: str(c.root) for k, c in caches.items()}
            self._save_state()
            self.board.record({**Candidate(row_id, "extract", FeatureSet(tag, choice.name, "all", "meanstd"),
                                           "-").row(), "seconds": seconds, "status": DONE,
                               "note": f"{len(caches)} feature sets, cache {next(iter(caches.values())).root.parent}"})
            self.bar.update(1)
        out = []
        for key, cache in caches.items():
            levels, pooling = key.split("-")
            out.append((FeatureSet(tag, choice.name, levels, pooling), cache))
        return out

    def _combined(self, extracted: list[list[tuple[FeatureSet, Any]]]) -> list[tuple[FeatureSet, Any]]:
        """Every extracted backbone together (a backbone group, `models/backbone_group.py`): per
        feature variant, the members' caches joined column-wise; nothing is run again."""
        from emorec.features.combine import combine_caches

        variants = [(f.feature_levels, f.pooling) for f, _ in extracted[0]] if extracted else []
        shared = [v for v in variants if all(v in {(f.feature_levels, f.pooling) for f, _ in sets} for sets in extracted)]
        self.bar.update(self.per_combined * (len(FEATURE_VARIANTS) - (len(shared) if len(extracted) > 1 else 0)))
        from tqdm import tqdm

        if len(extracted) < 2:
            tqdm.write(f"{COMBINED_TAG}: skipped, fewer than two backbones' features were extracted within the budget")
            return []
        out = []
        for levels, pooling in shared:
            members = [next(c for f, c in sets if (f.feature_levels, f.pooling) == (levels, pooling)) for sets in extracted]
            try:
                cache = combine_caches(members, self.cache_dir, log=self.log)
            except EmorecError as e:
                tqdm.write(f"{COMBINED_TAG}: skipped, {e}")
                self.bar.update(self.per_combined)
                continue
            out.append((FeatureSet(COMBINED_TAG, cache.spec["backbone"], levels, pooling), cache))
        return out

    # -- candidates ---------------------------------------------------------------------------

    def _run(self, candidate: Candidate, cache) -> None:
        from emorec.training.result import TrainingInterrupted

        done = self.board.done(candidate.id)
        if done is not None:
            self.bar.update(1)
            return
        # What the last candidate of this kind took (trainer runs are also cut by train.time_limit_s).
        estimate = self.spent.get(candidate.kind + candidate.head, 30.0)
        if not self.budget.allows(estimate, self.test_reserve):
            self._skip(candidate, f"~{estimate:.0f} s needed, {self.budget.remaining():.0f} s left")
            return
        run_dir = self.candidates_dir / candidate.id
        started = time.monotonic()
        try:
            with self._quiet():
                if candidate.kind == "logreg":
                    row = self._logreg(candidate, cache, run_dir)
                elif candidate.kind == "ensemble":
                    row = self._ensemble(candidate, cache, run_dir)
                else:
                    row = self._trainer_run(candidate, run_dir, features=cache)
        except TrainingInterrupted:
            raise
        except EmorecError as e:
            self._finish(candidate, {"status": "failed", "note": str(e).splitlines()[0][:200],
                                     "seconds": time.monotonic() - started}, run_dir)
            return
        self._finish(candidate, {**row, "seconds": time.monotonic() - started, "status": DONE}, run_dir)

    def _logreg(self, candidate: Candidate, cache, run_dir: Path) -> dict:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an interrupted write; the probe takes seconds
        cfg = self._config(self.base, LINEAR_HEAD, run_dir)
        C = candidate.settings["C"]
        probe = fit_logistic_regression(cache, C, seed=cfg.train.seed)
        row = write_probe_run(cfg, cache, probe, run_dir)
        x, y = self._views(cache)
        logits = out_of_fold_logits(x, y, C, len(cache.label_names), seed=cfg.train.seed)
        # Kept for the ensemble of probes: its folds' logits and the train-only map.
        np.savez(run_dir / CV_FILE, logits=logits, targets=y, weight=probe.weight, bias=probe.bias)
        return {"val_macro_f1": row["val_macro_f1"], "val_accuracy": row["val_accuracy"], "best_epoch": 1,
                "cv_macro_f1": macro_f1(y, logits.argmax(1), len(cache.label_names))}

    def _views(self, cache):
        """Train + val views of `cache`, loaded once for the probes of one feature set."""
        if self._views_of is None or self._views_of[0] != str(cache.root):
            self._views_of = (str(cache.root), train_val_views(cache))
        return self._views_of[1]

    def _best_probe(self, set_name: str) -> dict[str, str] | None:
        rows = [r for r in self.board.rows if r["status"] == DONE and r["kind"] == "logreg"
                and r["candidate"].startswith(f"{set_name}-logreg-") and r.get("cv_macro_f1")]
        return max(rows, key=lambda r: float(r["cv_macro_f1"]), default=None)

    def _ensemble_candidate(self, features: FeatureSet, extracted) -> Candidate:
        """Each backbone's probe with the best cross-validated score on this feature variant."""
        variant = (features.feature_levels, features.pooling)
        members = [next(f for f, _ in sets if (f.feature_levels, f.pooling) == variant).name for sets in extracted]
        return Candidate(f"{ENSEMBLE_TAG}-{features.feature_levels}-{features.pooling}-logreg", "ensemble",
                         FeatureSet(ENSEMBLE_TAG, features.backbone, *variant), "linear",
                         {"hidden_dims": "[]", "label_smoothing": 0.0, "mixup": 0, "members": members})

    def _ensemble(self, candidate: Candidate, cache, run_dir: Path) -> dict:
        """The members' probes averaged in logit space: scored by the sum of their out-of-fold
        logits (same folds: same images, order and seed), written as the group's linear head."""
        picks = [self._best_probe(name) for name in candidate.settings["members"]]
        if any(p is None for p in picks):
            raise EmorecError("a member backbone has no finished probe to ensemble")
        saved = [np.load(self.candidates_dir / p["candidate"] / CV_FILE) for p in picks]
        if any(s["targets"].shape != saved[0]["targets"].shape or (s["targets"] != saved[0]["targets"]).any()
               for s in saved):
            raise EmorecError("the member backbones' probes were scored on different images; run the search again "
                              "with a new --output")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        plan = self._plan(candidate.settings["members"], candidate.features)
        probe = ensemble_probe([Probe(s["weight"], s["bias"], float(p["C"]), 0, 0.0) for s, p in zip(saved, picks)], plan)
        Cs = "/".join(p["C"] for p in picks)
        row = write_probe_run(self._config(self.base, LINEAR_HEAD, run_dir), cache, probe, run_dir,
                              describe=f"ensemble of linear probes ({', '.join(p['candidate'] for p in picks)}): "
                                       f"their logits averaged, one linear head of the backbone group")
        (run_dir / MEMBERS_FILE).write_text(json.dumps([{"set": name, "candidate": p["candidate"], "C": float(p["C"])}
                                                        for name, p in zip(candidate.settings["members"], picks)]))
        logits = sum(s["logits"] for s in saved)
        return {"val_macro_f1": row["val_macro_f1"], "val_accuracy": row["val_accuracy"], "best_epoch": 1, "C": Cs,
                "cv_macro_f1": macro_f1(saved[0]["targets"], logits.argmax(1), len(cache.label_names))}

    def _plan(self, member_sets: list[str], features: FeatureSet):
        from emorec.models.backbone_group import group_columns

        channels = [self.sets[name].index["stats"]["level_channels"] for name in member_sets]
        return group_columns(channels, features.feature_levels, features.pooling)

    def _refit(self, leader: dict[str, str]) -> None:
        """A cross-validated leader (a probe or an ensemble of probes) refit on train + val into
        OUTPUT/best/; its estimate is the cross-validated score, since val is now seen."""
        if leader["kind"] not in ("logreg", "ensemble") or self.state.get("refit_of") == leader["candidate"]:
            return
        source = self.candidates_dir / leader["candidate"]
        set_name = f"{leader['candidate'].split('-')[0]}-{leader['feature_levels']}-{leader['pooling']}"
        seed = self.base.train.seed
        if leader["kind"] == "logreg":
            cache = self.sets[set_name]
            x, y = self._views(cache)
            probe = fit_probe_arrays(x, y, float(leader["C"]), len(cache.label_names), seed=seed)
            what = f"linear probe (C={leader['C']})"
        else:
            members = json.loads((source / MEMBERS_FILE).read_text())
            cache = self.sets[f"{COMBINED_TAG}-{leader['feature_levels']}-{leader['pooling']}"]
            probes = []
            for m in members:
                x, y = train_val_views(self.sets[m["set"]])
                probes.append(fit_probe_arrays(x, y, m["C"], len(cache.label_names), seed=seed))
            probe = ensemble_probe(probes, self._plan([m["set"] for m in members], FeatureSet(
                ENSEMBLE_TAG, leader["backbone"], leader["feature_levels"], leader["pooling"])))
            what = f"ensemble of linear probes ({', '.join(m['candidate'] for m in members)}), logits averaged"
        self._install_best(lambda tmp: write_probe_run(
            self._config(self.base, LINEAR_HEAD, tmp), cache, probe, tmp,
            describe=f"{what}, refit on the train + val images (centre and mirrored views) after "
                     f"{leader['candidate']} was chosen by {FOLDS}-fold cross-validation",
            extra={"refit": "train+val", "cv_macro_f1": float(leader["cv_macro_f1"]),
                   "note": "the val images were seen in training: cv_macro_f1 is the estimate"}),
            best_dir_of=leader["candidate"], refit_of=leader["candidate"])

    def _trainer_run(self, candidate: Candidate, run_dir: Path, features=None, base: Config | None = None) -> dict:
        from emorec.training.trainer import train

        limit = max(1.0, self.budget.remaining() - self.test_reserve)
        overrides = (*candidate.overrides, f"train.time_limit_s={limit:.0f}")
        if features is not None:
            overrides += ("train.head_only=true", f"train.features_dir={features.root}")
        cfg = self._config(base or self.base, overrides, run_dir)
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
                "note": "cut by the budget" if result.stopped_early and self.budget.remaining() < self.test_reserve + 5
                else ""}

    def _config(self, base: Config, overrides, run_dir: Path) -> Config:
        values = apply_overrides(base.to_dict(), [*overrides, f"train.output_dir={run_dir.parent}",
                                                  f"train.name={run_dir.name}",
                                                  f"data.source={self.output / 'splits.csv'}"])
        return config_from_dict(values)

    def _finish(self, candidate: Candidate, result: dict, run_dir: Path) -> None:
        row = {**candidate.row(), **result}
        before = {r["candidate"] for r in self.board.contenders()}
        self.board.record(row)
        self.spent[candidate.kind + candidate.head] = float(result.get("seconds", 0.0))
        leader = self.board.best()
        contenders = {r["candidate"] for r in self.board.contenders()}
        if leader is not None:
            self._promote(leader)  # the new row, or an earlier contender the new row handed the lead back to
        for gone in before - contenders:
            _remove_checkpoints(self.candidates_dir / gone, keep_best=False)
        _remove_checkpoints(run_dir, keep_best=candidate.id in contenders)
        self._print(row, leader)
        self.bar.update(1)

    def _skip(self, candidate: Candidate, why: str) -> None:
        row = {**candidate.row(), "status": "skipped", "note": f"budget: {why}"}
        if self.board.done(candidate.id) is None:
            self.board.record(row)
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

    @contextlib.contextmanager
    def _quiet(self):
        """The trainer's console (epoch lines, progress bars) goes to OUTPUT/fit.log."""
        with open(self.output / "fit.log", "a", encoding="utf-8") as f, contextlib.redirect_stderr(f):
            yield

    # -- LP-FT --------------------------------------------------------------------------------

    def _finetune(self, max_epochs: int) -> None:
        from emorec.training.result import TrainingInterrupted

        leader = self.board.best()
        if leader is None or leader["kind"] == "finetune":
            return
        tag = leader["candidate"].split("-")[0]
        features = FeatureSet(tag, leader["backbone"], leader["feature_levels"], leader["pooling"])
        candidate = Candidate(f"{leader['candidate']}-lpft", "finetune", features, leader["head"],
                              {k: leader.get(k, "") for k in ("C", "hidden_dims", "dropout", "weight_decay",
                                                                 "label_smoothing")})
        if self.board.done(candidate.id) is not None:
            self.bar.update(1)
            return
        basis = self.candidates_dir / leader["candidate"]
        spi = self._spi(leader["backbone"])
        per_epoch = OVERHEAD * (self.counts["train"] * (TRAIN_STEP_FORWARDS * spi + DECODE_S)
                                + self.counts["val"] * (spi + DECODE_S))
        left = self.budget.remaining() - self.test_reserve - 20.0  # model build, first batches
        epochs = min(max_epochs, int(left // per_epoch)) if per_epoch > 0 else 0
        if epochs < MIN_FINETUNE_EPOCHS:
            self._skip(candidate, f"an epoch on images takes ~{per_epoch:.0f} s, {max(left, 0):.0f} s left")
            return
        overrides = (*FINETUNE, f"model.init_from={basis}", f"train.epochs={epochs}",
                     f"data.num_workers={self.workers}")
        candidate.overrides = overrides
        candidate.settings["epochs"] = epochs
        started = time.monotonic()
        base = load_config(basis / "config.yaml")
        try:
            with self._quiet():
                row = self._trainer_run(candidate, self.candidates_dir / candidate.id, base=base)
        except EmorecError as e:
            if isinstance(e, TrainingInterrupted):
                raise
            self._finish(candidate, {"status": "failed", "note": str(e).splitlines()[0][:200],
                                     "seconds": time.monotonic() - started}, self.candidates_dir / candidate.id)
            return
        self._finish(candidate, {**row, "seconds": time.monotonic() - started, "status": DONE},
                     self.candidates_dir / candidate.id)

    # -- the chosen model ---------------------------------------------------------------------

    def _promote(self, leader: dict[str, str]) -> None:
        """OUTPUT/best/ = the leader's run directory, its manifest.csv holding every split (so
        `emorec evaluate OUTPUT/best --split test` works for head-only runs too)."""
        if self.state.get("best_dir_of") == leader["candidate"] and (self.best_dir / "checkpoints").is_dir():
            return
        source = self.candidates_dir / leader["candidate"]
        if not (source / "checkpoints" / "best.pt").is_file():
            raise EmorecError(f"the leading candidate's checkpoint is missing: {source}/checkpoints/best.pt; delete "
                              f"its row from {self.output / 'leaderboard.csv'} and run the search again")
        self._install_best(lambda tmp: shutil.copytree(source, tmp), best_dir_of=leader["candidate"])

    def _install_best(self, write, **state) -> None:
        """OUTPUT/best/ replaced by what `write` puts in a fresh folder, plus every split as its
        manifest.csv; built beside it first so an interruption never leaves half a model there."""
        tmp = self.output / "best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        shutil.copyfile(self.output / "splits.csv", tmp / "manifest.csv")
        shutil.rmtree(self.best_dir, ignore_errors=True)
        tmp.rename(self.best_dir)
        self.state.update(state)
        self._save_state()

    def _test(self, leader: dict[str, str]) -> dict[str, Any]:
        """The chosen model's test scores: the first and only time the test images are read."""
        from emorec.evaluation.evaluate import evaluate_run

        with self._quiet():
            result = evaluate_run(self.best_dir, split="test", device=str(self.device), num_workers=self.workers)
        metrics, tta = result.metrics, result.metrics_tta
        out = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
               "per_class_f1": {name: m["f1"] for name, m in metrics["per_class"].items()},
               "num_samples": metrics["num_samples"], "report": str(result.report_path)}
        if tta:
            out.update(tta_accuracy=tta["accuracy"], tta_macro_f1=tta["macro_f1"])
        return out


def _remove_checkpoints(run_dir: Path, keep_best: bool) -> None:
    """Finished candidates keep logs and metrics; only the leader keeps a checkpoint (best.pt)."""
    folder = run_dir / "checkpoints"
    for name in ("last.pt", "last.prev.pt", *(() if keep_best else ("best.pt",))):
        (folder / name).unlink(missing_ok=True)

