"""`torchrun -m emorec fit`: two gloo ranks on the CPU extract the search's features into the cache
one process writes, then rank 0 alone searches, finding that cache; a budget the extraction cannot
fit is refused on every rank before any image is read."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from emorec.features.cache import INDEX_NAME, FeatureCache

pytestmark = pytest.mark.slow


def fit_command(data, output, cache_dir, budget: str = "10m") -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "emorec",
            "fit", str(data), "--budget", budget, "--backbone", "test_efficientnet", "--random-init",
            "--image-size", "32", "--views", "1", "--heads", "logreg", "--no-finetune", "--no-test",
            "--output", str(output), "--cache-dir", str(cache_dir)]


def run(cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def test_the_ranks_extract_and_rank_0_searches_on_the_cache_they_wrote(tiny_dataset, tmp_path):
    proc = run(fit_command(tiny_dataset, tmp_path / "out", tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "extracted on 2 ranks" in out
    assert "cache hit" in out and "cache miss" not in out.split("extracted on 2 ranks")[1], \
        "rank 0's search read the ranks' cache instead of extracting again"
    assert proc.stdout.count("chosen ") == 1, "only rank 0 searches and reports"
    assert (tmp_path / "out" / "best" / "checkpoints").is_dir()
    caches = [FeatureCache(p) for p in (tmp_path / "cache").iterdir() if (p / INDEX_NAME).is_file()]
    assert len(caches) == 2, "the multi-level cache and the last-level one cut out of it"
    assert all(not (c.root / "parts").exists() and c.index["splits"]["train"]["count"] > 0 for c in caches)


def test_a_budget_the_extraction_cannot_fit_is_refused_on_every_rank(tiny_dataset, tmp_path):
    proc = run(fit_command(tiny_dataset, tmp_path / "out", tmp_path / "cache", budget="1s"))
    assert proc.returncode != 0
    assert proc.stderr.count("emorec: error: no candidate can finish within --budget 1s: the extraction alone needs") == 2
    # torchrun's launcher prints its own report of the failed ranks; nothing comes from inside emorec.
    assert not re.search(r'File "[^"]*emorec[/\\]', proc.stderr)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob(INDEX_NAME))
