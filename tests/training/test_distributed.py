"""DDP: 2 gloo processes on CPU train like 1 process with the double batch; only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emorec.training.distributed import ShardSampler, init_distributed
from emorec.training.trainer import train
from training_runs import (  # noqa: F401 (one_thread is a fixture)
    ONE_THREAD_ENV, SAME_RESULT_COLUMNS, checkpoint_weights, make_images, max_abs_diff, metric_rows, tiny_overrides, one_thread,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Equivalence needs a model whose output for a sample does not depend on the rest of its batch:
# test_convnext normalises with LayerNorm (no BatchNorm), the head is a single Linear (no
# BatchNorm1d, no dropout) and MixUp is off (it pairs samples within a batch). Class weights are
# off because a class-weighted mean is normalised per batch. fp32: the comparison is about the
# layout of the work, not about bf16 rounding. Plain shuffling: DistributedSampler
# with 1 replica draws the same permutation that 2 replicas split between them.
EQUIVALENT = ("model.backbone=test_convnext", "model.hidden_dims=[]", "model.dropout=[]", "augment.mix_prob=0",
              "loss.class_weights=none", "data.weighted_sampling=false", "train.epochs=1",
              "optim.accumulation_steps=2", "train.amp=off")


def test_shards_cover_every_sample_once_in_order():
    for n, world in [(10, 3), (7, 2), (2, 4), (0, 2)]:
        shards = [list(ShardSampler(n, world, r)) for r in range(world)]
        assert sum(shards, []) == list(range(n))
        assert [len(s) for s in shards] == [len(ShardSampler(n, world, r)) for r in range(world)]


def test_without_torchrun_the_run_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)


@pytest.mark.slow
def test_two_gloo_ranks_with_batch_b_match_one_process_with_batch_2b(tmp_path):
    data = make_images(tmp_path / "images", per_class=20)  # 64 train images: 8 steps of 8 = 2 x 4
    env = {**os.environ, **ONE_THREAD_ENV}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "emorec",
           "train", "--set", *tiny_overrides(data, tmp_path, "ddp", *EQUIVALENT, "data.batch_size=4")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run dir") == 1, "only rank 0 prints the result"

    from emorec.config import load_config

    train(load_config(None, tiny_overrides(data, tmp_path, "single", *EQUIVALENT, "data.batch_size=8")))
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    assert max_abs_diff(checkpoint_weights(ddp), checkpoint_weights(single)) < 1e-5
    row_ddp, row_single = metric_rows(ddp)[0], metric_rows(single)[0]
    for key in SAME_RESULT_COLUMNS:
        assert float(row_ddp[key]) == pytest.approx(float(row_single[key]), rel=1e-5, abs=1e-7), key
    # Validation is sharded across the ranks and gathered: the same metrics as one process.
    assert row_ddp["val_accuracy"] == row_single["val_accuracy"]

    # Only rank 0 wrote: one event file, one log line per epoch, no temporary checkpoint files.
    assert len(list((ddp / "tensorboard").iterdir())) == 1
    assert (ddp / "train.log").read_text().count("epoch   1/1") == 1
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD_ENV}, timeout=timeout)


WORKER = str(Path(__file__).with_name("ddp_worker.py"))


@pytest.mark.slow
def test_a_rank_with_an_empty_micro_batch_neither_hangs_its_peer_nor_lets_weights_diverge(tmp_path):
    out = tmp_path / "result.json"
    proc = torchrun(WORKER, "empty-batch", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["max_diff"] == 0.0 and result["moved"]
    # Accumulation 2: micro-batch 1 closes a group, so that step is skipped on both ranks; micro-batch
    # 2 opens one, which goes on with micro-batch 3.
    assert result["skipped_steps"] == 1


@pytest.mark.slow
def test_no_rank_checks_the_run_directory_before_rank_0_has_claimed_it(tmp_path):
    data = make_images(tmp_path / "images", per_class=8)
    proc = torchrun(WORKER, "slow-rank-1", "--set",
                    *tiny_overrides(data, tmp_path, "ddp", "train.epochs=1", "train.limit_train_batches=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").is_file()
