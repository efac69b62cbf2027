"""The state of a run that a checkpoint carries, and the rules for resuming from one.

`RunState` is everything besides the model, optimiser, schedule, scaler and EMA that must come
back identically after `--resume`: counters, the position in the epoch, early stopping, the
metrics history, the wall time and the epoch at which the current learning-rate schedule began.
`assemble_checkpoint` builds the checkpoint dict (layout in docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from emorec import checkpoint as ckpt_io
from emorec.errors import EmorecError
from emorec.training import distributed as dist_utils
from emorec.training.early_stopping import EarlyStopping
from emorec.training.engine import EpochProgress, LoopState
from emorec.training.seeding import capture_rng_state, restore_rng_state

# Settings a resumed run must keep: they fix the data order, the number of optimiser steps per
# epoch (so the position of the schedule) and what "best" means for early stopping and best.pt.
FIXED_ON_RESUME = ("data.batch_size", "optim.accumulation_steps", "train.monitor", "train.head_only",
                   "optim.name", "optim.schedule")  # the saved optimiser and schedule states are of these kinds


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values.get(part, {}) if isinstance(values, dict) else {}
    return values


def refuse_changed_settings(ckpt: dict[str, Any], cfg) -> None:
    """One-line error naming the first key of FIXED_ON_RESUME that differs from the checkpoint's."""
    saved, now = ckpt.get("config", {}), cfg.to_dict()
    for key in FIXED_ON_RESUME:
        before, after = _lookup(saved, key), _lookup(now, key)
        if before != {} and before != after:
            raise EmorecError(f"{ckpt.get('loaded_from', 'checkpoint')}: {key} was {before!r} and is {after!r} now; "
                              f"a resumed run keeps it (it fixes the data order, the schedule and the best "
                              f"checkpoint); drop --set {key}=... or start a new run with another train.name")


def run_finished(ckpt: dict[str, Any]) -> bool:
    """True when the checkpointed run completed every epoch it was configured for."""
    epochs = _lookup(ckpt.get("config", {}), "train.epochs")
    return not ckpt.get("batch_in_epoch", 0) and isinstance(epochs, int) and int(ckpt["epoch"]) >= epochs


@dataclass
class RunState:
    monitor: str
    patience: int
    start_epoch: int = 0
    loop: LoopState = field(default_factory=LoopState)
    progress: EpochProgress = field(default_factory=EpochProgress)
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0
    schedule_start_epoch: int = 0  # the epoch the current OneCycle began at (> 0 for an extended run)
    early: EarlyStopping = None  # type: ignore[assignment]
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        if self.early is None:
            self.early = EarlyStopping(self.monitor, self.patience)

    def wall_time(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def restore(self, ckpt: dict[str, Any], info: dist_utils.DistInfo) -> None:
        """Counters, early stopping, history and this rank's RNG stream and epoch position."""
        self.start_epoch = int(ckpt["epoch"])
        self.loop = LoopState(step=int(ckpt["step"]), bad_streak=int(ckpt.get("bad_streak", 0)))
        if ckpt.get("early_stopping"):
            self.early.load_state_dict(ckpt["early_stopping"])
        self.elapsed_before = float(ckpt.get("wall_time_s", 0.0))
        self.history = list(ckpt.get("history", []))
        self.schedule_start_epoch = int(ckpt.get("schedule_start_epoch", 0))
        ranks = ckpt.get("rng", {}).get("ranks", [])
        mid_epoch = bool(ckpt.get("batch_in_epoch", 0))
        if len(ranks) == info.world_size:
            restore_rng_state(ranks[info.rank])
            if mid_epoch:
                self.progress = EpochProgress(**ckpt["epoch_progress"][info.rank])
        elif mid_epoch:
            raise EmorecError(f"{ckpt['loaded_from']} was saved mid-epoch by {len(ranks)} processes; resume it with "
                              f"the same number of processes (now {info.world_size})")


def gather_rank_states(progress: EpochProgress) -> list[dict[str, Any]]:
    """Every rank's RNG state and epoch sums (a collective under DDP: all ranks must call it)."""
    local = {"rng": capture_rng_state(), "progress": progress.state_dict()}
    if not dist_utils.is_distributed():
        return [local]
    import torch.distributed as dist

    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, local)
    return ranks


def assemble_checkpoint(state: RunState, *, epoch: int, mid_epoch: bool, weights: dict, optimizer, scheduler,
                        scaler, ema_weights: dict | None, cfg, label_names: list[str], signature: dict,
                        mean: list[float], std: list[float]) -> dict[str, Any]:
    ranks = gather_rank_states(state.progress)
    return {
        "format": ckpt_io.FORMAT, "format_version": ckpt_io.FORMAT_VERSION,
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema_weights,
        "epoch": epoch, "step": state.loop.step, "bad_streak": state.loop.bad_streak,
        "batch_in_epoch": state.progress.batches if mid_epoch else 0,
        "epoch_progress": [r["progress"] for r in ranks],
        "rng": {"ranks": [r["rng"] for r in ranks]},
        "config": cfg.to_dict(), "label_map": list(label_names),
        "model_signature": signature, "versions": ckpt_io.library_versions(),
        "best_metric": state.early.best, "early_stopping": state.early.state_dict(),
        "history": list(state.history),
        "schedule_start_epoch": state.schedule_start_epoch,
        "wall_time_s": state.wall_time(),
        "data_mean": list(mean), "data_std": list(std),
    }
