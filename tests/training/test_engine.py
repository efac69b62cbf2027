"""The training step: accumulation, skipped non-finite steps, interruption points, evaluation.

These run the engine on a small MLP (no BatchNorm, no dropout), so equivalences are exact up to
float rounding; the full pipeline with timm models is in test_engine_training.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from training_runs import one_thread  # noqa: F401 (a fixture)
from emorec.training.engine import (
    EpochProgress,
    LoopState,
    NonFiniteLossError,
    StepOptions,
    train_one_epoch,
)
from emorec.inference import predict_logits

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def toy_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()  # 4 learnable classes
    return x, y


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


def batches(x, y, size):
    return [(x[i:i + size], y[i:i + size], 0) for i in range(0, len(x), size)]


def run_epoch(model, loader, accum=1, lr=0.1, grad_clip=0.0, loss_fn=None, max_bad_steps=10, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    state, progress = LoopState(), EpochProgress()
    stopped = train_one_epoch(model, loader, loss_fn or nn.CrossEntropyLoss(), opt, None, CPU,
                              StepOptions(accumulation_steps=accum, grad_clip=grad_clip, max_bad_steps=max_bad_steps),
                              state, progress, len(loader), show_progress=False, **kw)
    return state, progress, stopped


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_two_batches_of_16_with_accumulation_equal_one_batch_of_32():
    x, y = toy_data(64)
    a, b = toy_model(), toy_model()
    state_a, _, _ = run_epoch(a, batches(x, y, 16), accum=2, grad_clip=1.0)
    state_b, _, _ = run_epoch(b, batches(x, y, 32), accum=1, grad_clip=1.0)
    assert state_a.step == state_b.step == 2
    torch.testing.assert_close(flat(a), flat(b), rtol=1e-5, atol=1e-6)
    assert not torch.equal(flat(a), flat(toy_model())), "the weights must have moved"


def test_a_short_last_group_is_the_mean_of_its_own_batches():
    # 3 batches with accumulation 2: steps over (b1, b2) and (b3 alone, not halved).
    x, y = toy_data(48)
    a, b = toy_model(), toy_model()
    run_epoch(a, batches(x, y, 16), accum=2)
    run_epoch(b, [(x[:32], y[:32], 0), (x[32:], y[32:], 0)], accum=1)
    torch.testing.assert_close(flat(a), flat(b), rtol=1e-5, atol=1e-6)


def test_loss_decreases_on_a_learnable_set():
    x, y = toy_data(256)
    model = toy_model()
    losses = []
    for _ in range(5):
        _, progress, _ = run_epoch(model, batches(x, y, 32), lr=0.2)
        losses.append(progress.loss)
    assert losses[-1] < 0.6 * losses[0]
    _, progress, _ = run_epoch(model, batches(x, y, 32), lr=0.0)
    assert progress.accuracy > 0.8


def test_progress_counts_samples_loss_accuracy_and_skipped_images():
    x, y = toy_data(40)
    loader = [(x[:16], y[:16], 2), (x[16:], y[16:], 1)]
    _, progress, _ = run_epoch(toy_model(), loader, lr=0.0)
    assert progress.samples == 40 and progress.batches == 2 and progress.skipped_images == 3
    model = toy_model()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x), y).item()
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert progress.loss == pytest.approx(expected, rel=1e-5)
    assert progress.accuracy == pytest.approx(acc)
    assert progress.images_per_s > 0


def test_nan_batches_are_skipped_counted_and_leave_the_weights_alone():
    x, y = toy_data(64)
    poisoned = x.clone()
    poisoned[16:32, 0] = float("nan")  # batch 2 of 4 yields a NaN loss
    a, b = toy_model(), toy_model()
    state, progress, _ = run_epoch(a, batches(poisoned, y, 16))
    clean = [batch for i, batch in enumerate(batches(x, y, 16)) if i != 1]
    run_epoch(b, clean)
    assert progress.bad_steps == 1 and state.bad_streak == 0 and state.step == 4
    assert progress.samples == 48, "the bad batch is not part of the epoch's loss and accuracy"
    assert torch.isfinite(flat(a)).all()
    torch.testing.assert_close(flat(a), flat(b))


def test_a_nan_micro_batch_skips_its_whole_accumulation_group():
    x, y = toy_data(64)
    poisoned = x.clone()
    poisoned[:16, 0] = float("inf")
    a, b = toy_model(), toy_model()
    _, progress, _ = run_epoch(a, batches(poisoned, y, 16), accum=2)
    run_epoch(b, batches(x[32:], y[32:], 16), accum=2)
    assert progress.bad_steps == 1
    torch.testing.assert_close(flat(a), flat(b))


def test_consecutive_bad_steps_stop_the_run_with_advice():
    x, y = toy_data(64)
    x[:, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive.*lower optim\.max_lr.*train\.amp=off"):
        run_epoch(toy_model(), batches(x, y, 8), max_bad_steps=3)


def test_a_stop_request_ends_the_epoch_after_the_current_optimizer_step():
    x, y = toy_data(64)
    calls = []
    state, progress, stopped = run_epoch(toy_model(), batches(x, y, 8), accum=2,
                                         stop_requested=lambda: True, on_step=lambda: calls.append(1))
    assert stopped
    assert progress.batches == 2 and state.step == 1 and calls == [1], "stops at a group boundary, not mid-group"


def test_a_resumed_epoch_continues_from_its_batch_position():
    x, y = toy_data(64)
    full, part = toy_model(), toy_model()
    _, whole, _ = run_epoch(full, batches(x, y, 16), lr=0.1)
    opt = torch.optim.SGD(part.parameters(), lr=0.1)
    state, progress = LoopState(), EpochProgress()
    loader = batches(x, y, 16)
    opts = StepOptions()
    train_one_epoch(part, loader[:2], nn.CrossEntropyLoss(), opt, None, CPU, opts, state, progress, 4,
                    show_progress=False)
    assert progress.batches == 2
    train_one_epoch(part, loader[2:], nn.CrossEntropyLoss(), opt, None, CPU, opts, state, progress, 4,
                    show_progress=False)
    torch.testing.assert_close(flat(full), flat(part))
    assert progress.samples == whole.samples and progress.loss == pytest.approx(whole.loss)


def test_scheduler_steps_once_per_optimizer_step():
    x, y = toy_data(64)
    model = toy_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4)
    train_one_epoch(model, batches(x, y, 8), nn.CrossEntropyLoss(), opt, sched, CPU,
                    StepOptions(accumulation_steps=2), LoopState(), EpochProgress(), 8, show_progress=False)
    assert sched.last_epoch == 4


def test_predict_logits_returns_everything_in_order_and_restores_train_mode():
    x, y = toy_data(20)
    model = toy_model()
    model.train()
    logits, targets = predict_logits(model, batches(x, y, 8), CPU)
    assert model.training
    assert logits.shape == (20, 4) and logits.dtype == torch.float32
    assert torch.equal(targets, y)
    torch.testing.assert_close(logits, model(x).detach())
    assert math.isfinite(float(logits.sum()))


def test_an_odd_batch_with_mixup_trains_on_every_sample():
    from emorec.config import AugmentConfig
    from emorec.training.losses import FocalLoss
    from emorec.training.mixing import build_mixup

    x, y = toy_data(15)
    mixer = build_mixup(AugmentConfig(), 4, spatial=False)
    _, progress, _ = run_epoch(toy_model(), batches(x, y, 15), mixup=mixer, loss_fn=FocalLoss())
    assert progress.samples == 15


def test_an_empty_micro_batch_is_counted_and_the_epoch_goes_on():
    x, y = toy_data(32)
    empty = (torch.empty(0, 8), torch.empty(0, dtype=torch.long), 8)
    loader = batches(x, y, 16)
    loader.insert(1, empty)
    _, progress, _ = run_epoch(toy_model(), loader, accum=1)
    assert progress.batches == 3 and progress.samples == 32 and progress.skipped_images == 8
    assert progress.skipped_steps == 0, "one process has nothing to keep in step with"
