"""`train(cfg, resume, features)`: one whole run, from the data to checkpoints and summary.json.

One loop serves both kinds of run. Full training reads images (`sources.image_data`); head-only
training reads backbone features cached by `features/extract.py` (`sources.feature_data`) and
trains only the attention + MLP head. Either way the run has the same engine step, learning-rate
schedule, early stopping, metrics, signals, checkpoints and exact resume.

The order of work: device, checkpoint and config, data and splits, a check that the run folder
is free (rank 0 decides, every rank hears), model, loss, optimiser, schedule, restore; only then
is the run directory created, so a run that fails to start leaves nothing behind. Then the epoch
loop: engine.train_one_epoch, validation, early stopping and checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from emorec import checkpoint as ckpt_io
from emorec.config import Config, save_config
from emorec.errors import EmorecError
from emorec.training import distributed as dist_utils
from emorec.training.engine import EpochProgress, StepOptions, train_one_epoch
from emorec.training.learning_curve import FILENAME as LEARNING_CURVE, plot_learning_curve
from emorec.training.optim import steps_per_epoch_only
from emorec.training.result import RunResult, TrainingInterrupted
from emorec.training.run_dir import METRIC_COLUMNS, MetricsLog, check_new_run_dir, close_logging, setup_logging, write_json
from emorec.training.run_state import RunState, assemble_checkpoint, refuse_changed_settings, run_finished
from emorec.training.seeding import seed_everything, set_deterministic
from emorec.training.signals import StopRequest
from emorec.training.validation import validate


def cpu_bf16_supported() -> bool:
    """Native bf16 matrix kernels on this CPU (AVX512-BF16 or AMX), where bf16 autocast is fast."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """`auto`: bf16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16
    or AMX: 1.3x for a lite0 training step and 1.7x for the head on 2 such cores, measured), fp16
    on older CUDA GPUs, fp32 otherwise."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_supported() else None
    if amp == "fp16" and device.type != "cuda":
        raise EmorecError("train.amp=fp16 needs a CUDA device; use --set train.amp=bf16 or train.amp=off on CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


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


def train(cfg: Config, resume: str | Path | None = None, features=None) -> RunResult:
    """Run (or continue, with `resume` = a run directory or checkpoint file) one training run.

    `features`: a `FeatureCache` for head-only training (`cfg.train.head_only`); `emorec.api.train`
    finds or extracts it.
    """
    if cfg.train.head_only and features is None:
        raise EmorecError("train.head_only needs cached features: call emorec.api.train (or `emorec train "
                          "--head-only`), which finds or extracts them")
    info = dist_utils.init_distributed(cfg.train.device)
    threads = torch.get_num_threads()
    if info.device.type == "cpu" and cfg.data.num_workers > 0 and features is None:
        torch.set_num_threads(cpu_threads_beside_workers(cfg.data.num_workers, info.world_size))
    try:
        return _Run(cfg, resume, info, features).run()
    finally:
        torch.set_num_threads(threads)
        dist_utils.cleanup()


def adopt_cache(cfg: Config, cache, log: logging.Logger) -> Config:
    """The run's model is the backbone the cached features came from, pooled as they were; the
    cache says which."""
    spec, stats = cache.spec, cache.index.get("stats", {})
    if cfg.model.backbone != spec["backbone"]:
        log.info("model.backbone set to %s (the backbone of the feature cache, not %s)", spec["backbone"],
                 cfg.model.backbone)
    model = dataclasses.replace(cfg.model, backbone=spec["backbone"], weights=stats.get("weights_path"),
                                pretrained=bool(stats.get("pretrained", cfg.model.pretrained)),
                                feature_levels=spec.get("feature_levels", "last"), pooling=spec.get("pooling", "avg"))
    data = dataclasses.replace(cfg.data, image_size=int(spec["image_size"]),
                               source=cfg.data.source or str(cache.manifest_csv))
    train_cfg = dataclasses.replace(cfg.train, head_only=True, features_dir=str(cache.root))
    return dataclasses.replace(cfg, model=model, data=data, train=train_cfg)


class _Run:
    """One run; methods are the stages of `train`, in order."""

    def __init__(self, cfg: Config, resume: str | Path | None, info: dist_utils.DistInfo, features):
        self.info = info
        self.device = info.device
        self.features = features
        self.log = setup_logging(None, info.is_main)  # before loading: a checkpoint fallback is reported
        self.ckpt = ckpt_io.load_checkpoint(resume, which="last") if resume else None
        if self.ckpt is not None:
            run_dir = ckpt_io.run_dir_of(self.ckpt["loaded_from"])
            # The run continues in its own folder whatever output_dir / name the config says.
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(
                cfg.train, output_dir=str(run_dir.parent), name=run_dir.name))
        if features is not None:
            if info.distributed:
                raise EmorecError("head-only training runs in one process (it takes seconds to minutes); "
                                  "start it without torchrun")
            cfg = adopt_cache(cfg, features, self.log)
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.writer = None
        self.metrics = None
        self.state = RunState(cfg.train.monitor, cfg.train.patience)
        self.notes: list[str] = []  # what resuming decided, logged once train.log is open
        self.started = time.monotonic()  # train.time_limit_s counts from here

    def run(self) -> RunResult:
        try:
            self._prepare_data()
            self._claim_run_dir()
            self._build()
            self._restore()
            self._open_run_dir()
            return self._loop()
        finally:
            if self.writer is not None:
                self.writer.close()
            close_logging(self.log)

    # -- data, model, optimiser -----------------------------------------------------------------

    def _prepare_data(self) -> None:
        from emorec.data.labels import LabelMap
        from emorec.data.manifest import read_manifest
        from emorec.data.split import ensure_splits

        cfg = self.cfg
        if self.features is not None:
            # The cache holds everything a head-only run reads: vectors, labels and splits. Its
            # images are never opened, so they need not exist any more.
            missing = {"train", "val"} - set(self.features.splits)
            if missing:
                raise EmorecError(f"feature cache {self.features.root} has no {' or '.join(sorted(missing))} split; "
                                  "extract it from a dataset with train and val splits")
            self.manifest = None
            self.label_map = LabelMap(self.features.label_names)
            self.train_samples = self.val_samples = []
        else:
            if self.ckpt is not None:
                # The exact splits of the original run, not a re-split of data.source.
                manifest = read_manifest(str(self.run_dir / "manifest.csv"))
            else:
                if not cfg.data.source:
                    raise EmorecError("data.source is not set; pass --set data.source=FOLDER_OR_CSV")
                manifest = ensure_splits(read_manifest(cfg.data.source, cfg.data.images_root), cfg.data)
            self.manifest = manifest
            self.label_map = LabelMap.from_manifest(manifest)
            self.train_samples = manifest.subset("train").samples
            self.val_samples = manifest.subset("val").samples if "val" in manifest.splits() else []
            if not self.train_samples or not self.val_samples:
                raise EmorecError(f"{cfg.data.source}: need both train and val images (found "
                                  f"{len(self.train_samples)} train, {len(self.val_samples)} val); set "
                                  "data.val_fraction > 0 or add a val split")
        if self.ckpt is not None:
            ckpt_io.check_compatible(self.ckpt, cfg, self.label_map)
            refuse_changed_settings(self.ckpt, cfg)

    def _claim_run_dir(self) -> None:
        """A fresh run must not overwrite another: rank 0 looks, every rank gets its verdict, so
        no rank races rank 0 (which creates the folder later) and all fail together."""
        if self.ckpt is not None:
            return
        verdict = None
        if self.info.is_main:
            try:
                check_new_run_dir(self.run_dir)
            except EmorecError as e:
                verdict = str(e)
        verdict = dist_utils.broadcast_object(verdict)
        if verdict:
            raise EmorecError(verdict)

    def _build(self) -> None:
        from emorec.data.sampling import loss_class_weights
        from emorec.models import backbone_data_config, build_model, model_signature, parameter_summary
        from emorec.models import set_backbone_trainable, set_batchnorm_frozen
        from emorec.training.finetune import batchnorm_frozen, load_initial_weights
        from emorec.training.losses import build_loss
        from emorec.training.mixing import build_mixup
        from emorec.training.optim import build_optimizer, build_scheduler
        from emorec.training.sources import feature_data, image_data

        cfg, info = self.cfg, self.info
        seed_everything(cfg.train.seed)  # the same initial weights on every rank
        set_deterministic(cfg.train.deterministic)
        k = len(self.label_map)
        model_cfg = cfg.model
        init_from = cfg.model.init_from if self.ckpt is None else None
        if self.ckpt is not None or init_from:
            # Every weight comes from the checkpoint: do not fetch or read pretrained files again.
            model_cfg = dataclasses.replace(model_cfg, pretrained=False, weights=None)
        model = build_model(model_cfg, k)
        self.signature = model_signature(cfg, k)
        data_cfg = backbone_data_config(model.backbone)
        self.mean, self.std = list(data_cfg["mean"]), list(data_cfg["std"])
        source = self.ckpt if self.ckpt is not None else (
            load_initial_weights(model, init_from, self.label_map.names, self.signature) if init_from else None)
        if init_from:
            self.notes.append(f"weights from {source['loaded_from']} (model.init_from, epoch {source.get('epoch')})")
        if source is not None and source.get("data_mean"):
            # The preprocessing the weights were trained with (a local config.json's, say), which
            # the architecture's defaults need not match.
            self.mean, self.std = list(source["data_mean"]), list(source["data_std"])
        self.model = model
        if self.features is None:
            bn_frozen = batchnorm_frozen(cfg)
            set_batchnorm_frozen(model, bn_frozen)
            if bn_frozen:
                self.notes.append(f"backbone BatchNorm in eval mode (model.freeze_bn={cfg.model.freeze_bn})")
        if self.features is not None:
            # The backbone already ran at extraction: only the head trains, on vectors.
            set_backbone_trainable(model, False)
            self.params = parameter_summary(model)  # trainable: the head
            self.net = model.head.to(self.device)
            self.data = feature_data(cfg, info, self.features, k, self.device)
        else:
            self.params = parameter_summary(model)
            if cfg.train.channels_last:
                model = model.to(memory_format=torch.channels_last)
            model.to(self.device)
            if info.distributed and cfg.train.sync_batchnorm:
                if self.device.type == "cuda":
                    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
                else:
                    self.log.warning("train.sync_batchnorm needs CUDA devices; ignored on CPU")
            self.model = self.net = model
            self.data = image_data(cfg, info, self.train_samples, self.val_samples, self.label_map, self.mean,
                                   self.std, self.device)
        self.compiled = torch.compile(self.net) if cfg.train.compile else self.net
        # Different dropout / MixUp draws per rank; rank 0 draws what a single process would.
        seed_everything(cfg.train.seed + info.rank)

        weights = loss_class_weights(self.data.train_labels, k, cfg)
        self.loss_fn = build_loss(cfg.loss, weights).to(self.device)
        # smoothing lives in the loss (it smooths every target); passing it here too would smooth twice
        self.mixup = build_mixup(cfg.augment, k, 0.0, spatial=self.features is None)
        accum = max(1, cfg.optim.accumulation_steps)
        self.steps_per_epoch = -(-self.data.total_batches // accum)
        self.optimizer = build_optimizer(self.net, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ema = None
        if cfg.train.ema:
            from timm.utils import ModelEmaV3

            # Warm-up keeps the average from being dominated by the random initial head.
            self.ema = ModelEmaV3(self.net, decay=cfg.train.ema_decay, use_warmup=True)
        self.opts = StepOptions(accumulation_steps=accum, grad_clip=cfg.optim.grad_clip, amp_dtype=self.amp_dtype,
                                channels_last=cfg.train.channels_last and self.features is None,
                                max_bad_steps=cfg.train.max_bad_steps)
        self.ddp_model = None
        self.backbone_trainable: bool | None = None

    def _restore(self) -> None:
        from emorec.training.optim import build_scheduler

        ckpt = self.ckpt
        if ckpt is None:
            return
        self.model.load_state_dict(ckpt["model"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.state.restore(ckpt, self.info)
        done, epochs = self.state.start_epoch, self.cfg.train.epochs
        if steps_per_epoch_only(self.scheduler):
            # Plateau has no length: an extended or resized run just continues from its state.
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt["scheduler"]:
                self.scheduler.load_state_dict(ckpt["scheduler"])
        elif run_finished(ckpt) and epochs > done and not self.state.early.should_stop:
            # An extension of a finished run: a new OneCycle over the new epochs, built after the
            # optimiser state so it warms up again from optim.lr instead of jumping from the
            # final rate to the peak.
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.state.schedule_start_epoch = done
            self.scheduler = build_scheduler(self.optimizer, self.cfg, self.steps_per_epoch, epochs - done)
            self.notes.append(f"extending a finished run from {done} to {epochs} epochs: a new "
                              f"{epochs - done}-epoch schedule")
        else:
            # Built before the optimiser state is loaded, so the saved learning rates win.
            self.scheduler = build_scheduler(self.optimizer, self.cfg, self.steps_per_epoch,
                                             epochs - self.state.schedule_start_epoch)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            saved = ckpt["scheduler"]
            if saved and saved.get("total_steps") == self.scheduler.total_steps:
                self.scheduler.load_state_dict(saved)
            elif saved:
                # train.epochs changed mid-run: the new length, continued from the saved step.
                self.scheduler.last_epoch, self.scheduler._step_count = saved["last_epoch"], saved["_step_count"]
                self.notes.append(f"schedule resized from {saved.get('total_steps')} to "
                                  f"{self.scheduler.total_steps} steps at step {saved['last_epoch']}")
        self.notes.append(f"resumed {ckpt['loaded_from']}: {done} epochs done, batch {ckpt.get('batch_in_epoch', 0)} "
                          f"of the next, step {self.state.loop.step}")

    def _open_run_dir(self) -> None:
        """Everything built: now (rank 0 only) create the folder and its logs; all ranks wait."""
        if self.info.is_main:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            self.log = setup_logging(self.run_dir, True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.label_map.save(self.run_dir / "label_map.json")
            if self.features is not None:
                shutil.copyfile(self.features.manifest_csv, self.run_dir / "manifest.csv")
            elif self.ckpt is None:
                self.manifest.to_csv(self.run_dir / "manifest.csv")
            self.metrics = MetricsLog(self.run_dir / "metrics.csv")
            from torch.utils.tensorboard import SummaryWriter

            done = self.state.start_epoch
            self.metrics.keep_until(done)
            # purge_step drops events of epochs after the checkpoint (a resume from an earlier one).
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=done + 1 if self.ckpt else None)
        for note in self.notes:  # said once the run's train.log exists
            self.log.info("%s", note)
        dist_utils.barrier()

    # -- the loop -------------------------------------------------------------------------------

    def _set_backbone(self, epoch: int) -> None:
        """Freeze the backbone for the first epochs; (re)wrap DDP when trainability changes,
        because DDP registers its gradient hooks for the parameters that require grad at wrap time."""
        from emorec.models import set_backbone_trainable

        if self.features is not None:
            self.ddp_model = self.compiled
            return
        trainable = epoch >= self.cfg.model.freeze_backbone_epochs
        if trainable == self.backbone_trainable:
            return
        set_backbone_trainable(self.model, trainable)
        self.backbone_trainable = trainable
        if self.info.distributed:
            # Drop the old wrapper first: its reducer's gradient hooks go away with it.
            self.ddp_model = None
            self.ddp_model = dist_utils.wrap_ddp(self.compiled, self.device, self.cfg.data.image_size)
        else:
            self.ddp_model = self.compiled
        if self.cfg.model.freeze_backbone_epochs > 0:
            self.log.info("epoch %d: backbone %s", epoch + 1, "trainable" if trainable else "frozen")

    def _loop(self) -> RunResult:
        cfg, info, st = self.cfg, self.info, self.state
        stopped_early = False
        kind = "cached features" if self.features is not None else "images"
        self.log.info("run %s: %d train / %d val %s, %d classes, %s, %s params (%.1f MB), batch %d, device %s x%d, "
                      "amp %s", self.run_dir, len(self.data.train_labels), self.data.num_val, kind,
                      len(self.label_map), cfg.model.backbone, f"{self.params['total']:,}", self.params["size_mb"],
                      self.data.batch_size, self.device, info.world_size,
                      str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off")
        if st.start_epoch >= cfg.train.epochs or (st.early.should_stop and self.ckpt is not None):
            self.log.info("nothing to do: %d of %d epochs done%s", st.start_epoch, cfg.train.epochs,
                          " (stopped early)" if st.early.should_stop else "; pass --set train.epochs=N to extend")
        last = min(cfg.train.epochs, cfg.train.stop_after_epoch or cfg.train.epochs)
        with StopRequest() as stop:
            for epoch in range(st.start_epoch, last):
                if st.early.should_stop:
                    stopped_early = True
                    break
                self._set_backbone(epoch)
                self.data.sampler.set_epoch(epoch, start=st.progress.batches * self.data.batch_size)
                interrupted = train_one_epoch(
                    self.ddp_model, self.data.train_loader, self.loss_fn, self.optimizer,
                    None if steps_per_epoch_only(self.scheduler) else self.scheduler, self.device,
                    self.opts, st.loop, st.progress, self.data.total_batches, scaler=self.scaler, mixup=self.mixup,
                    ema=self.ema, stop_requested=lambda: stop.requested or self._out_of_time(),
                    on_step=lambda: self._periodic(epoch),
                    show_progress=info.is_main, desc=f"epoch {epoch + 1}/{cfg.train.epochs}")
                if interrupted:
                    self._save_last(epoch, mid_epoch=True)
                    if not stop.requested:  # train.time_limit_s, not a signal
                        self.log.info("time limit of %.0f s reached at epoch %d, batch %d/%d; checkpoint saved "
                                      "(emorec train --resume %s continues)", cfg.train.time_limit_s, epoch + 1,
                                      st.progress.batches, self.data.total_batches, self.run_dir)
                        stopped_early = True
                        break
                    signum = stop.signum or signal.SIGTERM
                    raise TrainingInterrupted(
                        f"interrupted by {signal.Signals(signum).name} at epoch {epoch + 1}, batch "
                        f"{st.progress.batches}/{self.data.total_batches}; checkpoint saved; continue with: "
                        f"emorec train --resume {self.run_dir}", signum)
                row = self._end_epoch(epoch)
                st.history.append(row)
                if st.early.update(row[cfg.train.monitor], epoch + 1):
                    self._save_best(epoch)
                st.progress = EpochProgress()
                self._save_last(epoch + 1)
                if st.early.should_stop:
                    stopped_early = True
                    self.log.info("early stopping: no %s improvement for %d epochs (best %.4f at epoch %d)",
                                  cfg.train.monitor, st.early.patience, st.early.best, st.early.best_epoch)
                    break
                if epoch + 1 == last < cfg.train.epochs:
                    stopped_early = True
                    self.log.info("stopped after epoch %d of %d (train.stop_after_epoch; emorec train --resume %s "
                                  "continues)", epoch + 1, cfg.train.epochs, self.run_dir)
                    break
                if self._out_of_time() and epoch + 1 < cfg.train.epochs:
                    stopped_early = True
                    self.log.info("time limit of %.0f s reached after epoch %d (emorec train --resume %s "
                                  "continues)", cfg.train.time_limit_s, epoch + 1, self.run_dir)
                    break
        done = int(st.history[-1]["epoch"]) if st.history else st.start_epoch
        result = RunResult(self.run_dir, done, st.early.best_epoch, st.early.best, cfg.train.monitor,
                           stopped_early, st.wall_time(), st.history, info.is_main)
        if info.is_main:
            self._write_summary(result)
            self.log.info("done: best %s %.4f at epoch %d; run dir %s", cfg.train.monitor, st.early.best,
                          st.early.best_epoch, self.run_dir)
        return result

    def _out_of_time(self) -> bool:
        limit = self.cfg.train.time_limit_s
        return limit > 0 and time.monotonic() - self.started > limit

    def _periodic(self, epoch: int) -> None:
        every = self.cfg.train.checkpoint_every_steps
        if every > 0 and self.state.loop.step % every == 0 and self.state.progress.batches < self.data.total_batches:
            self._save_last(epoch, mid_epoch=True)

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        p = self.state.progress
        sums = torch.tensor([p.samples, p.loss_sum, p.correct, p.skipped_images], dtype=torch.float64)
        samples, loss_sum, correct, skipped = dist_utils.all_reduce_sum(sums).tolist()
        seconds = float(dist_utils.all_reduce_max(torch.tensor([p.seconds], dtype=torch.float64)).item())
        val = validate(self.ema.module if self.ema is not None else self.net, self.data.val_loader, self.loss_fn,
                       self.device, len(self.label_map), self.amp_dtype, self.opts.channels_last)
        row = {
            "epoch": epoch + 1,
            "lr": max(g["lr"] for g in self.optimizer.param_groups),
            "train_loss": loss_sum / samples if samples else float("nan"),
            "train_accuracy": correct / samples if samples else float("nan"),
            **val,
            "skipped_images": int(skipped),
            "bad_steps": p.bad_steps,
            "images_per_s": samples / seconds if seconds > 0 else 0.0,
            "epoch_seconds": seconds,
            "wall_time_s": self.state.wall_time(),  # the run's clock: the learning curve's x axis
        }
        if steps_per_epoch_only(self.scheduler):  # plateau: after validation, before the checkpoint
            self.scheduler.step(row[self.cfg.train.monitor])
        if self.info.is_main:
            self.metrics.append(row)
            plot_learning_curve(self.metrics.rows, self.run_dir / LEARNING_CURVE, title=self.run_dir.name)
            for key in METRIC_COLUMNS[1:]:
                self.writer.add_scalar(key, row[key], epoch + 1)
            self.writer.flush()
            self.log.info("epoch %3d/%d  loss %.4f  acc %.3f  val_loss %.4f  val_acc %.3f  val_f1 %.3f  lr %.2e  "
                          "%.0f img/s  %.0fs%s%s%s", epoch + 1, self.cfg.train.epochs, row["train_loss"],
                          row["train_accuracy"], row["val_loss"], row["val_accuracy"], row["val_macro_f1"], row["lr"],
                          row["images_per_s"], seconds, f"  skipped {int(skipped)} images" if skipped else "",
                          f"  bad steps {p.bad_steps}" if p.bad_steps else "",
                          f"  steps skipped (empty micro-batch) {p.skipped_steps}" if p.skipped_steps else "")
        return row

    # -- checkpoints ----------------------------------------------------------------------------

    def _weights(self, net_weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The whole classifier's state dict (frozen backbone included for head-only runs, so every
        checkpoint is a complete model), with `net_weights` (e.g. the EMA copy) for the trained part."""
        if net_weights is None:
            return self.model.state_dict()
        if self.features is None:
            return net_weights
        return {**self.model.state_dict(), **{f"head.{k}": v for k, v in net_weights.items()}}

    def _checkpoint(self, epoch: int, weights: dict, mid_epoch: bool) -> dict[str, Any]:
        return assemble_checkpoint(
            self.state, epoch=epoch, mid_epoch=mid_epoch, weights=weights, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler,
            ema_weights=self.ema.module.state_dict() if self.ema is not None else None, cfg=self.cfg,
            label_names=self.label_map.names, signature=self.signature, mean=self.mean, std=self.std)

    def _save_last(self, epoch: int, mid_epoch: bool = False) -> None:
        state = self._checkpoint(epoch, self._weights(), mid_epoch)
        if self.info.is_main:
            ckpt_io.save_checkpoint(self.run_dir / "checkpoints" / ckpt_io.LAST, state, keep_previous=True)
        dist_utils.barrier()

    def _save_best(self, epoch: int) -> None:
        # Evaluation wants the weights that were validated: the EMA copy when EMA is on.
        weights = self._weights(self.ema.module.state_dict() if self.ema is not None else None)
        state = self._checkpoint(epoch + 1, weights, False)
        if self.info.is_main:
            ckpt_io.save_checkpoint(self.run_dir / "checkpoints" / ckpt_io.BEST, state)

    def _write_summary(self, result: RunResult) -> None:
        write_json(self.run_dir / "summary.json", {
            "run_dir": str(self.run_dir), "backbone": self.cfg.model.backbone, "params": self.params,
            "mode": "head_only" if self.features is not None else "full",
            "feature_cache": str(self.features.root) if self.features is not None else None,
            "num_classes": len(self.label_map), "labels": list(self.label_map.names),
            "train_images": len(self.data.train_labels), "val_images": self.data.num_val,
            "epochs_completed": result.epochs_completed,
            "best_epoch": result.best_epoch, "monitor": result.monitor, "best_metric": result.best_metric,
            "stopped_early": result.stopped_early, "final": result.final,
            "wall_time_s": round(result.wall_time_s, 2), "device": str(self.device),
            "world_size": self.info.world_size, "amp": str(self.amp_dtype) if self.amp_dtype else "off",
        })
