"""`torchrun -m emorec features extract`: two gloo ranks on the CPU write the cache one process
writes (same key, rows and values), which the cache reader and head-only training read as such."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from emorec.cli import main
from emorec.features.cache import find_cache
from emorec.features.extract import cached_arrays

pytestmark = pytest.mark.slow


def extract_args(data, cache_dir, workers: str) -> list[str]:
    # float32: the comparison is about who computed the vectors, not about float16 rounding.
    # One augmented view: its draws must not depend on the ranks or the loader's workers either.
    return ["features", "extract", str(data), "--backbone", "test_efficientnet", "--random-init", "--image-size", "32",
            "--views", "1", "--grid", "2", "--dtype", "float32", "--batch-size", "4", "--workers", workers,
            "--cache-dir", str(cache_dir)]


def test_two_ranks_write_the_cache_one_process_writes(tiny_dataset, tmp_path, capsys):
    (tiny_dataset / "awe" / "awe_000.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "emorec",
           *extract_args(tiny_dataset, tmp_path / "ranks", "1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("cache: ") == 1, "only rank 0 reports"
    assert main(extract_args(tiny_dataset, tmp_path / "alone", "0")) == 0
    ranks, alone = find_cache(tmp_path / "ranks"), find_cache(tmp_path / "alone")

    assert ranks.key == alone.key and ranks.root.name == alone.root.name
    assert sorted(p.name for p in ranks.root.iterdir()) == sorted(p.name for p in alone.root.iterdir())  # no parts/
    assert ranks.manifest_csv.read_bytes() == alone.manifest_csv.read_bytes()
    assert ranks.index["splits"] == alone.index["splits"] and ranks.index["stats"]["skipped"] == 1
    for split in alone.splits:
        a, b = ranks.split(split), alone.split(split)
        assert a.valid.tolist() == b.valid.tolist() and a.labels.tolist() == b.labels.tolist()
        np.testing.assert_allclose(a.pooled, b.pooled, atol=1e-5)
        np.testing.assert_allclose(a.grid, b.grid, atol=1e-5)
        assert not np.allclose(a.pooled[:, 0], 0)
    # The augmented view is a draw of its own, not a copy of the centre view.
    assert not np.allclose(ranks.split("train").pooled[:, 2], ranks.split("train").pooled[:, 0])
    vectors, labels = cached_arrays(ranks, "train")
    assert vectors.shape[0] == len(labels) == int(alone.split("train").valid.sum())
