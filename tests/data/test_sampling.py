"""Class weights like scikit-learn's 'balanced'; weighted sampling that balances classes and
shards disjointly and reproducibly across ranks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import DistributedSampler

from emorec.config import Config
from emorec.data.sampling import (DistributedWeightedSampler, build_sampler, class_weights, loss_class_weights,
                                  sample_weights)

LABELS = [0] * 300 + [1] * 60 + [2] * 15  # 20:4:1, like FER-2013's happy : fear : disgust


def test_class_weights_match_sklearn_balanced():
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(LABELS))
    assert torch.allclose(class_weights(LABELS, 3), torch.tensor(expected, dtype=torch.float32))
    assert torch.equal(class_weights(LABELS, 3, mode="none"), torch.ones(3))


def test_absent_class_gets_zero_weight():
    w = class_weights([0, 0, 2], 3)
    assert w[1] == 0 and w[0] > 0 and w[2] > w[0]


def test_weighted_sampler_draws_classes_about_equally():
    sampler = DistributedWeightedSampler(sample_weights(LABELS, 3), 6000, num_replicas=1, rank=0, seed=0)
    drawn = Counter(LABELS[i] for i in sampler)
    assert len(sampler) == 6000
    assert all(abs(drawn[c] / 6000 - 1 / 3) < 0.03 for c in range(3))


def test_sampling_power_one_half_draws_classes_by_the_square_root_of_their_counts():
    sampler = DistributedWeightedSampler(sample_weights(LABELS, 3, power=0.5), 20000, 1, 0, seed=0)
    drawn = Counter(LABELS[i] for i in sampler)
    roots = np.sqrt([300, 60, 15])
    assert all(abs(drawn[c] / 20000 - roots[c] / roots.sum()) < 0.02 for c in range(3))


@pytest.mark.parametrize("sampling, power", [(False, 0.5), (True, 0.0), (True, 0.5), (True, 1.0)])
def test_sampler_and_loss_weights_together_give_every_class_the_same_share(sampling, power):
    # Expected loss mass of class c = P(draw c) * w_c: equal for every class, once, whatever
    # the split between sampler and loss (before, a full sampler times full weights squared it).
    cfg = Config()
    cfg.data.weighted_sampling, cfg.data.sampling_power = sampling, power
    drawn = np.bincount(LABELS).astype(float)
    if sampling:
        drawn = drawn * sample_weights(LABELS, 3, power).numpy()[[0, 300, 360]]
    share = drawn / drawn.sum() * loss_class_weights(LABELS, 3, cfg).numpy()
    assert np.allclose(share, share[0])
    assert np.isclose(share.sum(), 1.0)  # the mean weight of a drawn sample stays 1


def test_a_fully_balancing_sampler_leaves_the_loss_unweighted():
    cfg = Config()
    cfg.data.weighted_sampling, cfg.data.sampling_power = True, 1.0
    assert torch.equal(loss_class_weights(LABELS, 3, cfg), torch.ones(3))


def test_loss_weights_none_and_bad_sampling_power():
    from emorec.errors import EmorecError

    cfg = Config()
    cfg.loss.class_weights = "none"
    assert loss_class_weights(LABELS, 3, cfg) is None
    cfg.loss.class_weights, cfg.data.sampling_power = "balanced", 1.5
    with pytest.raises(EmorecError, match="data.sampling_power"):
        loss_class_weights(LABELS, 3, cfg)


def test_ranks_share_one_draw_disjointly_and_each_epoch_differs():
    w = sample_weights(LABELS, 3)
    single = list(DistributedWeightedSampler(w, len(LABELS), 1, 0, seed=7))
    ranks = [DistributedWeightedSampler(w, len(LABELS), 2, r, seed=7) for r in range(2)]
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == 188  # ceil(375 / 2)
    interleaved = [shares[j % 2][j // 2] for j in range(len(LABELS))]
    assert interleaved == single[: len(LABELS)]  # rank r holds positions r, r+2, ... of the one draw
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != shares[0]


def test_set_epoch_start_resumes_mid_epoch():
    s = DistributedWeightedSampler(sample_weights(LABELS, 3), 100, 1, 0, seed=1)
    s.set_epoch(3)
    full = list(s)
    s.load_state_dict({"epoch": 3, "start": 40})
    assert list(s) == full[40:] and len(s) == 60 and s.state_dict() == {"epoch": 3, "start": 40}


def test_build_sampler_follows_the_config_and_is_epoch_seeded():
    cfg = Config()
    weighted = build_sampler(LABELS, 3, cfg)
    assert isinstance(weighted, DistributedWeightedSampler) and len(weighted) == len(LABELS)
    cfg.data.weighted_sampling = False
    shuffled = build_sampler(LABELS, 3, cfg)
    assert isinstance(shuffled, DistributedSampler) and sorted(shuffled) == list(range(len(LABELS)))
    shuffled.set_epoch(1)
    again = build_sampler(LABELS, 3, cfg)
    again.set_epoch(1)
    assert list(shuffled) == list(again), "the order is a function of (seed, epoch)"


def test_two_ranks_split_what_one_process_draws():
    cfg, labels = Config(), LABELS[:-1]  # an even count: no padding sample
    for weighted in (True, False):
        cfg.data.weighted_sampling = weighted
        single = list(build_sampler(labels, 3, cfg))
        ranks = [list(build_sampler(labels, 3, cfg, num_replicas=2, rank=r)) for r in (0, 1)]
        assert sorted(ranks[0] + ranks[1]) == sorted(single) and ranks[0] != ranks[1]


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError):
        DistributedWeightedSampler([0.0, 0.0], 2, 1, 0)
