"""Losses: focal loss by hand on toy cases, its cross-entropy special case, soft targets."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from emorec.config import LossConfig
from emorec.training.losses import CombinedLoss, FocalLoss, build_loss

# Two classes, logits (0, ln 3): p = (1/4, 3/4).
LOGITS_2 = torch.tensor([[0.0, math.log(3.0)]])
# focal, gamma 2, alpha 0.25, per class k as the target:
#   k = 0: 0.25 * (1 - 1/4)^2 * -ln(1/4) = 0.25 * 0.5625 * 1.3862944 = 0.1949476
#   k = 1: 0.25 * (1 - 3/4)^2 * -ln(3/4) = 0.25 * 0.0625 * 0.2876821 = 0.0044950
FOCAL_IF_0 = 0.1949476
FOCAL_IF_1 = 0.0044950


def test_focal_loss_by_hand_for_each_hard_target():
    loss = FocalLoss(gamma=2.0, alpha=0.25)
    assert float(loss(LOGITS_2, torch.tensor([0]))) == pytest.approx(FOCAL_IF_0, abs=1e-6)
    assert float(loss(LOGITS_2, torch.tensor([1]))) == pytest.approx(FOCAL_IF_1, abs=1e-6)
    # A batch is the mean of its samples: (0.1949476 + 0.0044950) / 2 = 0.0997213.
    both = loss(LOGITS_2.repeat(2, 1), torch.tensor([0, 1]))
    assert float(both) == pytest.approx(0.0997213, abs=1e-6)


def test_confident_correct_predictions_count_less_than_under_cross_entropy():
    # Cross-entropy of target 1 is ln(4/3) = 0.2876821; focal keeps alpha * (1/4)^2 of it.
    ce = FocalLoss(gamma=0.0, alpha=1.0)(LOGITS_2, torch.tensor([1]))
    assert float(ce) == pytest.approx(0.2876821, abs=1e-6)
    assert float(FocalLoss()(LOGITS_2, torch.tensor([1]))) == pytest.approx(0.25 * 0.0625 * 0.2876821, abs=1e-7)


def test_class_weights_weight_each_sample_and_normalise_by_the_total_weight():
    # weights (2, 1): (2 * 0.1949476 + 1 * 0.0044950) / (2 + 1) = 0.1314634
    loss = FocalLoss(weight=torch.tensor([2.0, 1.0]))
    assert float(loss(LOGITS_2.repeat(2, 1), torch.tensor([0, 1]))) == pytest.approx(0.1314634, abs=1e-6)


def test_soft_targets_by_hand():
    # Half-and-half target: 0.5 * 0.1949476 + 0.5 * 0.0044950 = 0.0997213
    loss = FocalLoss()
    assert float(loss(LOGITS_2, torch.tensor([[0.5, 0.5]]))) == pytest.approx(0.0997213, abs=1e-6)
    # 0.8 / 0.2 mix: 0.8 * 0.1949476 + 0.2 * 0.0044950 = 0.1568571
    assert float(loss(LOGITS_2, torch.tensor([[0.8, 0.2]]))) == pytest.approx(0.1568571, abs=1e-6)


def test_label_smoothing_by_hand():
    # eps 0.2 over 2 classes: target 1 becomes (0.1, 0.9), and the focal factor is the target's:
    # 0.25 * (1 - 3/4)^2 * (0.9 * -ln(3/4) + 0.1 * -ln(1/4)) = 0.25 * 0.0625 * 0.3975419 = 0.0062116
    loss = FocalLoss(label_smoothing=0.2)
    assert float(loss(LOGITS_2, torch.tensor([1]))) == pytest.approx(0.0062116, abs=1e-6)


def _sample_weighted_cross_entropy(logits, targets, weight, smoothing):
    per_sample = F.cross_entropy(logits, targets, reduction="none", label_smoothing=smoothing)
    return (weight[targets] * per_sample).sum() / weight[targets].sum()


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_heavy_class_weights_with_smoothing_keep_the_optimum_on_the_true_class(gamma):
    # FER-2013's balanced weights. Weighting the smoothing mass by the column it lands on (what
    # F.cross_entropy(weight=, label_smoothing=) does) moves the optimum of a "happy" image to
    # 28% "disgust" (gamma 2) or 18% (gamma 0), and a model trained so predicts the rare class.
    weight = torch.tensor([1.027, 9.407, 1.001, 0.568, 0.826, 0.849, 1.293])
    loss = FocalLoss(gamma=gamma, alpha=0.25, weight=weight, label_smoothing=0.1)
    logits = torch.zeros(1, 7, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(1500):
        opt.zero_grad()
        loss(logits, torch.tensor([3])).backward()
        opt.step()
    p = torch.softmax(logits.detach(), dim=1)[0]
    assert int(p.argmax()) == 3 and float(p[3]) > 0.9
    assert float(p[1]) < 0.02  # no more on the heavily weighted class than on any other
    assert torch.allclose(p[[0, 1, 2, 4, 5, 6]], p[0].expand(6), atol=2e-3)


def test_three_classes_gamma_one_by_hand():
    # logits ln(1, 2, 5): p = (1/8, 2/8, 5/8); target 2 with gamma 1, alpha 1:
    # (1 - 5/8) * -ln(5/8) = 0.375 * 0.4700036 = 0.1762514
    logits = torch.log(torch.tensor([[1.0, 2.0, 5.0]]))
    assert float(FocalLoss(gamma=1.0, alpha=1.0)(logits, torch.tensor([2]))) == pytest.approx(0.1762514, abs=1e-6)


@pytest.mark.parametrize("smoothing, weighted", [(0.0, False), (0.1, False), (0.0, True)])
def test_gamma_zero_alpha_one_is_cross_entropy_for_hard_targets(smoothing, weighted):
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 5) * 3, torch.randint(0, 5, (16,))
    weight = torch.rand(5) + 0.5 if weighted else None
    ours = FocalLoss(gamma=0.0, alpha=1.0, weight=weight, label_smoothing=smoothing)(logits, targets)
    theirs = F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_weighted_smoothing_weights_each_image_by_its_own_class_not_by_column():
    # PyTorch weights the smoothing mass by its column; here each image's whole loss carries
    # its own class weight (see the module docstring).
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 5) * 3, torch.randint(0, 5, (16,))
    weight = torch.rand(5) + 0.5
    ours = FocalLoss(gamma=0.0, alpha=1.0, weight=weight, label_smoothing=0.1)(logits, targets)
    assert not torch.allclose(ours, F.cross_entropy(logits, targets, weight=weight, label_smoothing=0.1), atol=1e-4)
    assert torch.allclose(ours, _sample_weighted_cross_entropy(logits, targets, weight, 0.1), atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gamma_zero_alpha_one_is_cross_entropy_for_soft_targets(smoothing):
    torch.manual_seed(1)
    logits = torch.randn(16, 5) * 3
    targets = torch.softmax(torch.randn(16, 5), dim=1)
    ours = FocalLoss(gamma=0.0, alpha=1.0, label_smoothing=smoothing)(logits, targets)
    assert torch.allclose(ours, F.cross_entropy(logits, targets, label_smoothing=smoothing), atol=1e-6)


def test_one_hot_soft_targets_equal_their_hard_labels_with_weights_and_smoothing():
    torch.manual_seed(2)
    logits, targets = torch.randn(8, 4), torch.randint(0, 4, (8,))
    loss = FocalLoss(weight=torch.tensor([1.0, 2.0, 0.5, 3.0]), label_smoothing=0.1)
    assert torch.allclose(loss(logits, targets), loss(logits, F.one_hot(targets, 4).float()), atol=1e-6)


def test_gradients_are_finite_for_extreme_logits():
    logits = torch.tensor([[80.0, -80.0, 0.0], [-80.0, 80.0, 0.0]], requires_grad=True)
    loss = FocalLoss(label_smoothing=0.1)(logits, torch.tensor([1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_build_loss_modes():
    torch.manual_seed(3)
    logits, targets = torch.randn(6, 3), torch.randint(0, 3, (6,))
    weights = torch.tensor([1.0, 2.0, 3.0])
    cfg = LossConfig(label_smoothing=0.1)
    focal = build_loss(cfg, weights)
    assert isinstance(focal, FocalLoss) and (focal.gamma, focal.alpha) == (2.0, 0.25)
    ce = build_loss(dataclasses.replace(cfg, name="ce"), weights)
    assert torch.allclose(ce(logits, targets), _sample_weighted_cross_entropy(logits, targets, weights, 0.1))
    combined = build_loss(dataclasses.replace(cfg, name="combined", ce_weight=0.5), weights)
    assert isinstance(combined, CombinedLoss)
    assert torch.allclose(combined(logits, targets), focal(logits, targets) + 0.5 * ce(logits, targets))
    unweighted = build_loss(dataclasses.replace(cfg, name="ce"), None)
    assert torch.allclose(unweighted(logits, targets), F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_class_weights_move_with_the_module():
    loss = build_loss(LossConfig(), torch.tensor([1.0, 2.0]))
    assert loss.to(torch.float64).weight is not None  # a buffer, carried by .to(device)
    assert "weight" in dict(loss.named_buffers())


def test_bad_loss_settings_are_user_errors():
    from emorec.errors import EmorecError

    with pytest.raises(EmorecError, match="loss.gamma"):
        build_loss(LossConfig(gamma=-1.0), None)
    with pytest.raises(EmorecError, match="loss.label_smoothing"):
        build_loss(LossConfig(label_smoothing=1.0), None)
