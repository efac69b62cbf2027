"""`train(cfg, resume)`: one whole run, from the manifest to checkpoints and summary.json.

The order of work: device and seeds, data and splits, run directory (rank 0 only), model, loss,
optimiser, schedule, then the epoch loop (engine.train_one_epoch + a sharded validation), early
stopping and checkpoints. Everything that must come back identically after `--resume` (weights,
optimiser, schedule, scaler, EMA, RNG states of every rank, position in the epoch, early stopping)
goes into the checkpoint; docs/ARCHITECTURE.md lists the keys.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emorec.config import Config, save_config
from emorec.errors import EmorecError
from emorec import checkpoint as ckpt_io
from emorec.training import distributed as dist_utils
from emorec.training.data_order import ResumableSampler, SeededSamples
from emorec.training.early_stopping import EarlyStopping
from emorec.inference import predict_logits
from emorec.training.engine import EpochProgress, LoopState, StepOptions, train_one_epoch
from emorec.training.run_dir import METRIC_COLUMNS, MetricsLog, check_new_run_dir, close_logging, setup_logging, write_json
from emorec.training.seeding import capture_rng_state, restore_rng_state, seed_everything, set_deterministic
from emorec.training.signals import StopRequest


class TrainingInterrupted(EmorecError):
    """SIGINT / SIGTERM: a resumable checkpoint was written; exit code 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class RunResult:
    run_dir: Path
    epochs_completed: int
    best_epoch: int
    best_metric: float
    monitor: str
    stopped_early: bool
    wall_time_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True  # False on the other ranks of a DDP run (they print nothing)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """`auto`: bf16 on CUDA where supported (no loss scaling needed), else fp16; fp32 on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise EmorecError("train.amp=fp16 needs a CUDA device; use --set train.amp=bf16 or train.amp=off on CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


def train(cfg: Config, resume: str | Path | None = None) -> RunResult:
    """Run (or continue, with `resume` = a run directory or checkpoint file) one training run."""
    if cfg.train.head_only:
        from emorec.features.head_training import train_head  # a different loop: cached features

        return train_head(cfg, str(resume) if resume else None)
    info = dist_utils.init_distributed(cfg.train.device)
    threads = torch.get_num_threads()
    if info.device.type == "cpu" and cfg.data.num_workers > 0:
        torch.set_num_threads(cpu_threads_beside_workers(cfg.data.num_workers, info.world_size))
    try:
        return _Run(cfg, resume, info).run()
    finally:
        torch.set_num_threads(threads)
        dist_utils.cleanup()


def cpu_threads_beside_workers(num_workers: int, world_size: int = 1) -> int:
    """Intra-op threads for CPU training: the cores left after the loader workers, shared by ranks.

    PyTorch's default (one thread per core) oversubscribes the cores the loader workers decode
    on; each op's threads then wait for a descheduled sibling. Measured on 2 shared, busy cores
    (the emotion6 demo, tf_efficientnet_lite0 at 128 px, batch 32, 2 workers): ~9.5 s per
    fine-tuning step with 2 threads, ~1.5 s with 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, (cores - num_workers * world_size) // max(world_size, 1))


class _Run:
    """The state of one run; methods are the stages of `train`, in order."""

    def __init__(self, cfg: Config, resume: str | Path | None, info: dist_utils.DistInfo):
        self.info = info
        self.device = info.device
        self.log = setup_logging(None, info.is_main)  # before loading: a checkpoint fallback is reported
        self.ckpt = ckpt_io.load_checkpoint(resume, which="last") if resume else None
        if self.ckpt is not None:
            run_dir = ckpt_io.run_dir_of(self.ckpt["loaded_from"])
            # The run continues in its own folder whatever output_dir / name the config says.
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(
                cfg.train, output_dir=str(run_dir.parent), name=run_dir.name))
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.writer = None

    # -- stages ---------------------------------------------------------------------------------

    def run(self) -> RunResult:
        self.started = time.perf_counter()
        try:
            self._prepare_data()
            self._prepare_run_dir()
            self._build()
            self._restore()
            return self._loop(self.started)
        finally:
            if self.writer is not None:
                self.writer.close()
            close_logging(self.log)

    def _prepare_data(self) -> None:
        from emorec.data.labels import LabelMap
        from emorec.data.manifest import read_manifest
        from emorec.data.split import ensure_splits

        cfg = self.cfg
        if self.ckpt is not None:
            # The exact splits of the original run, not a re-split of data.source.
            manifest = read_manifest(str(self.run_dir / "manifest.csv"))
        else:
            if not cfg.data.source:
                raise EmorecError("data.source is not set; pass --set data.source=FOLDER_OR_CSV")
            check_new_run_dir(self.run_dir)  # on every rank, so all fail together before any collective
            manifest = ensure_splits(read_manifest(cfg.data.source, cfg.data.images_root), cfg.data)
        self.manifest = manifest
        self.label_map = LabelMap.from_manifest(manifest)
        self.train_samples = manifest.subset("train").samples
        self.val_samples = manifest.subset("val").samples if "val" in manifest.splits() else []
        if not self.train_samples or not self.val_samples:
            raise EmorecError(f"{cfg.data.source}: need both train and val images (found {len(self.train_samples)} "
                              f"train, {len(self.val_samples)} val); set data.val_fraction > 0 or add a val split")
        if self.ckpt is not None:
            ckpt_io.check_compatible(self.ckpt, cfg, self.label_map)

    def _prepare_run_dir(self) -> None:
        if not self.info.is_main:
            return
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.log = setup_logging(self.run_dir, True)
        save_config(self.cfg, self.run_dir / "config.yaml")
        self.label_map.save(self.run_dir / "label_map.json")
        if self.ckpt is None:
            self.manifest.to_csv(self.run_dir / "manifest.csv")
        self.metrics = MetricsLog(self.run_dir / "metrics.csv")
        from torch.utils.tensorboard import SummaryWriter

        done = self.ckpt["epoch"] if self.ckpt else 0
        self.metrics.keep_until(done)
        # purge_step drops events of epochs after the checkpoint (a resume from an earlier one).
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=done + 1 if self.ckpt else None)

    def _build(self) -> None:
        from emorec.data.dataset import ManifestDataset
        from emorec.data.sampling import loss_class_weights
        from emorec.data.transforms import build_eval_transform, build_train_transform, eval_resize_size
        from emorec.models import backbone_data_config, build_model, model_signature, parameter_summary
        from emorec.training.losses import build_loss
        from emorec.training.mixing import build_mixup
        from emorec.training.optim import build_optimizer, build_scheduler

        cfg, info = self.cfg, self.info
        seed_everything(cfg.train.seed)  # the same initial weights on every rank
        set_deterministic(cfg.train.deterministic)
        k = len(self.label_map)
        model_cfg = cfg.model
        if self.ckpt is not None:
            # Every weight comes from the checkpoint: do not fetch or read pretrained files again.
            model_cfg = dataclasses.replace(model_cfg, pretrained=False, weights=None)
        model = build_model(model_cfg, k)
        self.signature = model_signature(cfg, k)
        self.params = parameter_summary(model)
        data_cfg = backbone_data_config(model.backbone)
        self.mean, self.std = list(data_cfg["mean"]), list(data_cfg["std"])
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.to(self.device)
        if info.distributed and cfg.train.sync_batchnorm:
            if self.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                self.log.warning("train.sync_batchnorm needs CUDA devices; ignored on CPU")
        self.model = model
        if cfg.train.compile:
            self.model = torch.compile(model)
        # Different dropout / MixUp draws per rank; rank 0 draws what a single process would.
        seed_everything(cfg.train.seed + info.rank)

        train_labels = self.label_map.encode([s.label for s in self.train_samples])
        weights = loss_class_weights(train_labels, k, cfg)
        self.loss_fn = build_loss(cfg.loss, weights).to(self.device)
        # smoothing lives in the loss (it smooths every target); passing it here too would smooth twice
        self.mixup = build_mixup(cfg.augment, k, 0.0)

        size = cfg.data.image_size
        train_ds = ManifestDataset(self.train_samples, self.label_map, build_train_transform(cfg, self.mean, self.std), size)
        val_ds = ManifestDataset(self.val_samples, self.label_map, build_eval_transform(cfg, self.mean, self.std),
                                 eval_resize_size(size))
        self.sampler = ResumableSampler(self._base_sampler(train_labels, k, train_ds), info.rank, info.world_size)
        self.batch_size = cfg.data.batch_size  # per process, as in torchvision's references
        drop_last = len(self.sampler.base) >= 2 * self.batch_size  # no size-1 BatchNorm batch, keep tiny sets
        self.train_loader = self._loader(SeededSamples(train_ds, cfg.train.seed), self.sampler, self.batch_size, drop_last)
        val_sampler = dist_utils.ShardSampler(len(val_ds), info.world_size, info.rank)
        self.val_loader = self._loader(val_ds, val_sampler, max(cfg.eval.batch_size, 1), False)
        full = len(self.sampler.base) // self.batch_size if drop_last else math.ceil(len(self.sampler.base) / self.batch_size)
        limit = cfg.train.limit_train_batches
        self.total_batches = min(full, limit) if limit > 0 else full
        accum = max(1, cfg.optim.accumulation_steps)
        self.steps_per_epoch = math.ceil(self.total_batches / accum)

        self.optimizer = build_optimizer(dist_utils.unwrap(self.model), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ema = None
        if cfg.train.ema:
            from timm.utils import ModelEmaV3

            # Warm-up keeps the average from being dominated by the random initial head.
            self.ema = ModelEmaV3(dist_utils.unwrap(self.model), decay=cfg.train.ema_decay, use_warmup=True)
        self.opts = StepOptions(accumulation_steps=accum, grad_clip=cfg.optim.grad_clip, amp_dtype=self.amp_dtype,
                                channels_last=cfg.train.channels_last, max_bad_steps=cfg.train.max_bad_steps)
        self.state = LoopState()
        self.early = EarlyStopping(cfg.train.monitor, cfg.train.patience)
        self.progress = EpochProgress()
        self.start_epoch = 0
        self.elapsed_before = 0.0
        self.history: list[dict[str, Any]] = []
        self.ddp_model = None
        self.backbone_trainable: bool | None = None

    def _base_sampler(self, train_labels: list[int], k: int, train_ds):
        """An epoch-seeded sampler over this rank's share (also for a single process, so the order
        is a function of (seed, epoch) and the run can restart mid-epoch)."""
        from torch.utils.data import DistributedSampler

        from emorec.data.sampling import DistributedWeightedSampler, draw_weights

        info, seed = self.info, self.cfg.train.seed
        draw = draw_weights(train_labels, k, self.cfg)
        if draw is not None:
            return DistributedWeightedSampler(draw, len(train_labels),
                                              num_replicas=info.world_size, rank=info.rank, seed=seed)
        return DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)

    def _loader(self, dataset, sampler, batch_size: int, drop_last: bool):
        from torch.utils.data import DataLoader

        from emorec.data.dataset import collate_skip

        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_skip,
            drop_last=drop_last, pin_memory=self.cfg.data.pin_memory and self.device.type == "cuda",
            persistent_workers=self.cfg.data.persistent_workers and workers > 0,
            # An explicit generator: creating an iterator must not consume the global RNG, or a
            # resumed run would draw different dropout / MixUp numbers than an uninterrupted one.
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
        )

    def _restore(self) -> None:
        ckpt = self.ckpt
        if ckpt is None:
            return
        model = dist_utils.unwrap(self.model)
        model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self._restore_scheduler(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.start_epoch = int(ckpt["epoch"])
        self.state = LoopState(step=int(ckpt["step"]), bad_streak=int(ckpt.get("bad_streak", 0)))
        if ckpt.get("early_stopping"):
            self.early.load_state_dict(ckpt["early_stopping"])
        self.elapsed_before = float(ckpt.get("wall_time_s", 0.0))
        self.history = list(ckpt.get("history", []))
        ranks = ckpt.get("rng", {}).get("ranks", [])
        if len(ranks) == self.info.world_size:
            restore_rng_state(ranks[self.info.rank])
            if ckpt.get("batch_in_epoch", 0):
                self.progress = EpochProgress(**ckpt["epoch_progress"][self.info.rank])
        elif ckpt.get("batch_in_epoch", 0):
            raise EmorecError(f"{ckpt['loaded_from']} was saved mid-epoch by {len(ranks)} processes; resume it with "
                              f"the same number of processes (now {self.info.world_size})")
        self.log.info("resumed %s: %d epochs done, batch %d of the next, step %d", ckpt["loaded_from"],
                      self.start_epoch, ckpt.get("batch_in_epoch", 0), self.state.step)

    def _restore_scheduler(self, saved: dict) -> None:
        """Continue the schedule; a run extended with a larger train.epochs keeps its new length."""
        if self.scheduler is None or saved is None:
            return
        fresh_total = getattr(self.scheduler, "total_steps", None)
        self.scheduler.load_state_dict(saved)
        if fresh_total is not None and saved.get("total_steps") != fresh_total:
            # OneCycle's phase boundaries come from total_steps: take them from the new schedule.
            rebuilt = self._fresh_scheduler()
            for key in ("total_steps", "_schedule_phases"):
                if hasattr(rebuilt, key):
                    setattr(self.scheduler, key, getattr(rebuilt, key))
            self.log.info("schedule extended from %s to %s steps", saved.get("total_steps"), fresh_total)

    def _fresh_scheduler(self):
        from emorec.training.optim import build_optimizer, build_scheduler

        probe = build_optimizer(dist_utils.unwrap(self.model), self.cfg)
        return build_scheduler(probe, self.cfg, self.steps_per_epoch)

    # -- the loop -------------------------------------------------------------------------------

    def _set_backbone(self, epoch: int) -> None:
        """Freeze the backbone for the first epochs; (re)wrap DDP when trainability changes,
        because DDP registers its gradient hooks for the parameters that require grad at wrap time."""
        from emorec.models import set_backbone_trainable

        trainable = epoch >= self.cfg.model.freeze_backbone_epochs
        if trainable == self.backbone_trainable:
            return
        set_backbone_trainable(dist_utils.unwrap(self.model), trainable)
        self.backbone_trainable = trainable
        if self.info.distributed:
            # Drop the old wrapper first: its reducer's gradient hooks go away with it.
            self.ddp_model = None
            self.ddp_model = dist_utils.wrap_ddp(self.model, self.device, self.cfg.data.image_size)
        else:
            self.ddp_model = self.model
        if self.cfg.model.freeze_backbone_epochs > 0:
            self.log.info("epoch %d: backbone %s", epoch + 1, "trainable" if trainable else "frozen")

    def _loop(self, started: float) -> RunResult:
        cfg, info = self.cfg, self.info
        history = self.history
        stopped_early = False
        self.log.info("run %s: %d train / %d val images, %d classes, %s, %s params (%.1f MB), device %s x%d, amp %s",
                      self.run_dir, len(self.train_samples), len(self.val_samples), len(self.label_map),
                      cfg.model.backbone, f"{self.params['total']:,}", self.params["size_mb"], self.device,
                      info.world_size, str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off")
        if self.start_epoch >= cfg.train.epochs or (self.early.should_stop and self.ckpt is not None):
            self.log.info("nothing to do: %d of %d epochs done%s", self.start_epoch, cfg.train.epochs,
                          " (stopped early)" if self.early.should_stop else "; pass --set train.epochs=N to extend")
        with StopRequest() as stop:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                if self.early.should_stop:
                    stopped_early = True
                    break
                self._set_backbone(epoch)
                self.sampler.set_epoch(epoch, start=self.progress.batches * self.batch_size)
                interrupted = train_one_epoch(
                    self.ddp_model, self.train_loader, self.loss_fn, self.optimizer, self.scheduler, self.device,
                    self.opts, self.state, self.progress, self.total_batches, scaler=self.scaler, mixup=self.mixup,
                    ema=self.ema, stop_requested=lambda: stop.requested, on_step=lambda: self._periodic(epoch, started),
                    show_progress=info.is_main, desc=f"epoch {epoch + 1}/{cfg.train.epochs}")
                if interrupted:
                    self._save_last(epoch, started, mid_epoch=True)
                    signum = stop.signum or signal.SIGTERM
                    raise TrainingInterrupted(
                        f"interrupted by {signal.Signals(signum).name} at epoch {epoch + 1}, batch "
                        f"{self.progress.batches}/{self.total_batches}; checkpoint saved; continue with: "
                        f"emorec train --resume {self.run_dir}", signum)
                row = self._end_epoch(epoch)
                history.append(row)
                improved = self.early.update(row[cfg.train.monitor], epoch + 1)
                if improved:
                    self._save_best(epoch)
                self.progress = EpochProgress()
                self._save_last(epoch + 1, started)
                if self.early.should_stop:
                    stopped_early = True
                    self.log.info("early stopping: no %s improvement for %d epochs (best %.4f at epoch %d)",
                                  cfg.train.monitor, self.early.patience, self.early.best, self.early.best_epoch)
                    break
        wall = self.elapsed_before + time.perf_counter() - started
        done = int(history[-1]["epoch"]) if history else self.start_epoch
        result = RunResult(self.run_dir, done, self.early.best_epoch, self.early.best, cfg.train.monitor,
                           stopped_early, wall, history, info.is_main)
        if info.is_main:
            self._write_summary(result)
            self.log.info("done: best %s %.4f at epoch %d; run dir %s", cfg.train.monitor, self.early.best,
                          self.early.best_epoch, self.run_dir)
        return result

    def _periodic(self, epoch: int, started: float) -> None:
        every = self.cfg.train.checkpoint_every_steps
        if every > 0 and self.state.step % every == 0 and self.progress.batches < self.total_batches:
            self._save_last(epoch, started, mid_epoch=True)

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        from emorec.evaluation.metrics import macro_f1

        p = self.progress
        sums = torch.tensor([p.samples, p.loss_sum, p.correct, p.skipped_images], dtype=torch.float64)
        samples, loss_sum, correct, skipped = dist_utils.all_reduce_sum(sums).tolist()
        seconds = float(dist_utils.all_reduce_max(torch.tensor([p.seconds], dtype=torch.float64)).item())
        eval_model = self.ema.module if self.ema is not None else dist_utils.unwrap(self.model)
        logits, targets = predict_logits(eval_model, self.val_loader, self.device, self.amp_dtype,
                                         self.cfg.train.channels_last)
        # Contiguous shards concatenated in rank order: the single-process logits, so the metrics match.
        logits, targets = dist_utils.all_gather_concat(logits), dist_utils.all_gather_concat(targets)
        with torch.no_grad():
            val_loss = float(self.loss_fn(logits.to(self.device), targets.to(self.device)))
        preds = logits.argmax(1).numpy()
        y = targets.numpy()
        row = {
            "epoch": epoch + 1,
            "lr": max(g["lr"] for g in self.optimizer.param_groups),
            "train_loss": loss_sum / samples if samples else math.nan,
            "train_accuracy": correct / samples if samples else math.nan,
            "val_loss": val_loss,
            "val_accuracy": float((preds == y).mean()) if len(y) else math.nan,
            "val_macro_f1": macro_f1(y, preds, len(self.label_map)) if len(y) else math.nan,
            "skipped_images": int(skipped),
            "bad_steps": p.bad_steps,
            "images_per_s": samples / seconds if seconds > 0 else 0.0,
            "epoch_seconds": seconds,
        }
        if self.info.is_main:
            self.metrics.append(row)
            for key in METRIC_COLUMNS[1:]:
                self.writer.add_scalar(key, row[key], epoch + 1)
            self.writer.flush()
            self.log.info("epoch %3d/%d  loss %.4f  acc %.3f  val_loss %.4f  val_acc %.3f  val_f1 %.3f  lr %.2e  "
                          "%.0f img/s  %.0fs%s%s", epoch + 1, self.cfg.train.epochs, row["train_loss"],
                          row["train_accuracy"], row["val_loss"], row["val_accuracy"], row["val_macro_f1"], row["lr"],
                          row["images_per_s"], seconds, f"  skipped {int(skipped)} images" if skipped else "",
                          f"  bad steps {p.bad_steps}" if p.bad_steps else "")
        return row

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint(self, epoch: int, started: float, weights: dict, mid_epoch: bool) -> dict[str, Any]:
        # Every rank's RNG state and running sums: a mid-epoch resume restores each rank's stream.
        local = {"rng": capture_rng_state(), "progress": self.progress.state_dict()}
        ranks = [local]
        if dist_utils.is_distributed():
            import torch.distributed as dist

            ranks = [None] * self.info.world_size
            dist.all_gather_object(ranks, local)
        return {
            "format": ckpt_io.FORMAT, "format_version": ckpt_io.FORMAT_VERSION,
            "model": weights,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": epoch, "step": self.state.step, "bad_streak": self.state.bad_streak,
            "batch_in_epoch": self.progress.batches if mid_epoch else 0,
            "epoch_progress": [r["progress"] for r in ranks],
            "rng": {"ranks": [r["rng"] for r in ranks]},
            "config": self.cfg.to_dict(), "label_map": list(self.label_map.names),
            "model_signature": self.signature, "versions": ckpt_io.library_versions(),
            "best_metric": self.early.best, "early_stopping": self.early.state_dict(),
            "history": list(self.history),
            "wall_time_s": self.elapsed_before + time.perf_counter() - started,
            "data_mean": self.mean, "data_std": self.std,
        }

    def _save_last(self, epoch: int, started: float, mid_epoch: bool = False) -> None:
        state = self._checkpoint(epoch, started, dist_utils.unwrap(self.model).state_dict(), mid_epoch)
        if self.info.is_main:
            ckpt_io.save_checkpoint(self.run_dir / "checkpoints" / ckpt_io.LAST, state, keep_previous=True)
        dist_utils.barrier()

    def _save_best(self, epoch: int) -> None:
        # Evaluation wants the weights that were validated: the EMA copy when EMA is on.
        weights = (self.ema.module if self.ema is not None else dist_utils.unwrap(self.model)).state_dict()
        state = self._checkpoint(epoch + 1, self.started, weights, False)
        if self.info.is_main:
            ckpt_io.save_checkpoint(self.run_dir / "checkpoints" / ckpt_io.BEST, state)

    def _write_summary(self, result: RunResult) -> None:
        write_json(self.run_dir / "summary.json", {
            "run_dir": str(self.run_dir), "backbone": self.cfg.model.backbone, "params": self.params,
            "num_classes": len(self.label_map), "labels": list(self.label_map.names),
            "train_images": len(self.train_samples), "val_images": len(self.val_samples),
            "epochs_completed": result.epochs_completed,
            "best_epoch": result.best_epoch, "monitor": result.monitor, "best_metric": result.best_metric,
            "stopped_early": result.stopped_early, "final": result.final,
            "wall_time_s": round(result.wall_time_s, 2), "device": str(self.device),
            "world_size": self.info.world_size, "amp": str(self.amp_dtype) if self.amp_dtype else "off",
        })


# `check` and `demo` live in their own modules; imported lazily here because `demo` calls `train`.
def check(cfg: Config, num_images: int = 4):
    """Build the model, push a few real images through the full pipeline, forward + backward."""
    from emorec.training.check import check_pipeline

    return check_pipeline(cfg, num_images)


def demo(data: str | Path, overrides: list[str] | None = None, config: str | Path | None = None) -> RunResult:
    """The short `configs/demo.yaml` run on `data`."""
    from emorec.training.demo import run_demo

    return run_demo(data, overrides, config)
