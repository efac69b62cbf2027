"""The training step; nothing here knows about emotions, run folders or where batches come from
(decoded images or cached feature vectors). Evaluation passes live in `emorec.inference`.

One epoch = micro-batches grouped into optimizer steps of `accumulation_steps`. Each micro-batch's
loss is divided by the size of its group, so a group's gradient is the mean over all its samples:
2 x 16 with accumulation equals 32 without (BatchNorm statistics aside). The scheduler advances
once per optimizer step. Under DDP the gradient all-reduce happens only on a group's last
micro-batch (`no_sync` on the others).

Non-finite losses and empty micro-batches (every image unreadable): every rank reports its flags
through small all-reduces per micro-batch, so all ranks skip the same work together (a rank that
skipped alone would deadlock DDP or let the replicas' weights drift apart).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from emorec.errors import EmorecError
from emorec.inference import to_device
from emorec.training.distributed import all_reduce_max, unwrap
from emorec.training.mixing import mix_batch


class NonFiniteLossError(EmorecError):
    """Too many consecutive optimizer steps had a NaN / inf loss."""


@dataclass
class StepOptions:
    accumulation_steps: int = 1
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    amp_dtype: torch.dtype | None = None  # torch.float16 / torch.bfloat16 autocast, None = fp32
    channels_last: bool = False
    max_bad_steps: int = 10


@dataclass
class LoopState:
    """Counters that run across epochs (saved in checkpoints)."""

    step: int = 0  # optimizer steps taken (or skipped) so far
    bad_streak: int = 0  # consecutive skipped steps


@dataclass
class EpochProgress:
    """Running sums of one epoch; a mid-epoch checkpoint stores them so the epoch's row is exact."""

    batches: int = 0  # micro-batches done in this epoch, including those before a resume
    samples: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    skipped_images: int = 0
    bad_steps: int = 0
    skipped_steps: int = 0  # optimizer steps not taken because a rank's last micro-batch was empty
    seconds: float = 0.0

    def state_dict(self) -> dict:
        return asdict(self)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else math.nan

    @property
    def images_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def _is_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def train_one_epoch(
    model: nn.Module,
    loader,
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    device: torch.device,
    opts: StepOptions,
    state: LoopState,
    progress: EpochProgress,
    total_batches: int,
    *,
    scaler: torch.amp.GradScaler | None = None,
    mixup: Callable | None = None,
    ema=None,
    stop_requested: Callable[[], bool] = lambda: False,
    on_step: Callable[[], None] | None = None,
    show_progress: bool = True,
    desc: str = "train",
) -> bool:
    """Train until `total_batches` micro-batches of the epoch are done; returns True when it
    stopped early because `stop_requested()` (on any rank) asked for it after an optimizer step.

    `loader` yields `(images, targets, n_skipped)` and starts at micro-batch `progress.batches`.
    """
    model.train()
    accum = max(1, opts.accumulation_steps)
    ddp = _is_ddp(model)
    group_bad = group_skip = False
    stop_flag = False
    bar = tqdm(total=total_batches, initial=progress.batches, desc=desc, leave=False, dynamic_ncols=True,
               disable=not show_progress)
    tick = time.perf_counter()
    try:
        for images, targets, n_skipped in loader:
            i = progress.batches
            if i >= total_batches:
                break
            group_start = (i // accum) * accum
            group_size = min(accum, total_batches - group_start)
            last_in_group = i - group_start == group_size - 1
            progress.skipped_images += int(n_skipped)

            # Every rank learns whether any rank's micro-batch is empty (all its images unreadable)
            # before the forward pass. Then no rank runs it: a rank without a backward would leave
            # its peers waiting in DDP's gradient all-reduce. Under DDP an empty last micro-batch
            # means the group's gradients were never averaged across ranks, so every rank skips
            # that optimizer step.
            flags = torch.tensor([float(len(images) == 0), float(stop_requested())], device=device)
            empty_any, stop_any = (bool(v) for v in all_reduce_max(flags).tolist())
            stop_flag = stop_flag or stop_any
            if empty_any:
                group_skip = group_skip or (ddp and last_in_group)
            else:
                images = to_device(images, device, opts.channels_last)
                targets = targets.to(device, non_blocking=True)
                hard_targets = targets
                sync = model.no_sync() if ddp and not last_in_group else contextlib.nullcontext()
                with sync:
                    if mixup is not None:
                        images, targets = mix_batch(mixup, images, targets)
                    with torch.autocast(device.type, dtype=opts.amp_dtype or torch.float32,
                                        enabled=opts.amp_dtype is not None):
                        logits = model(images)
                    loss = loss_fn(logits.float(), targets)
                    bad = torch.tensor([float(not bool(torch.isfinite(loss)))], device=device)
                    if bool(all_reduce_max(bad).item()):
                        group_bad = True
                        if ddp:
                            # Keep DDP's gradient hooks in step with the other ranks; the gradients
                            # are discarded below, so zeroing the loss is only for the collective.
                            (loss * 0).nan_to_num(0.0, 0.0, 0.0).backward()
                    else:
                        scaled = loss / group_size
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                        n = len(images)
                        progress.samples += n
                        progress.loss_sum += float(loss.detach()) * n
                        progress.correct += float((logits.detach().argmax(1) == hard_targets).sum())
            progress.batches += 1

            if last_in_group:
                if group_bad:
                    optimizer.zero_grad(set_to_none=True)
                    progress.bad_steps += 1
                    state.bad_streak += 1
                    if state.bad_streak >= opts.max_bad_steps:
                        raise NonFiniteLossError(
                            f"training stopped: {state.bad_streak} consecutive optimizer steps had a NaN/inf loss "
                            f"(last at step {state.step}); lower optim.max_lr / optim.lr, or train in fp32 with "
                            "--set train.amp=off")
                elif group_skip:
                    optimizer.zero_grad(set_to_none=True)
                    progress.skipped_steps += 1
                else:
                    _optimizer_step(model, optimizer, scaler, opts.grad_clip)
                    state.bad_streak = 0
                    if ema is not None:
                        ema.update(unwrap(model), step=state.step)
                # The schedule is a function of time (steps), so it advances on a skipped step too;
                # otherwise OneCycle would run past its total and raise at the end of the run.
                if scheduler is not None:
                    scheduler.step()
                state.step += 1
                group_bad = group_skip = False
                progress.seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                if on_step is not None:
                    on_step()
                if stop_flag:
                    return True
            bar.update(1)
            bar.set_postfix(loss=f"{progress.loss:.4f}", acc=f"{progress.accuracy:.3f}",
                            img_s=f"{progress.samples / max(progress.seconds + time.perf_counter() - tick, 1e-9):.1f}",
                            refresh=False)
    finally:
        bar.close()
    progress.seconds += time.perf_counter() - tick
    return False


def _optimizer_step(model: nn.Module, optimizer, scaler, grad_clip: float) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)  # skips the update itself when the fp16 gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
