"""`torchrun -m emorec predict`: two gloo ranks on the CPU write the rows one process writes, count
an unreadable image once, and a job killed midway resumes to the very file of an uninterrupted one."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from run_factory import make_run

from emorec.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import ONE_THREAD_ENV, make_images  # noqa: E402

pytestmark = pytest.mark.slow
WORKER = str(Path(__file__).with_name("distributed_predict_worker.py"))
BATCH = "4"


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD_ENV}, timeout=240)


def predict_args(job, output: Path) -> list[str]:
    return ["predict", str(job.run), str(job.images), "--output", str(output), "--top-k", "4", "--batch-size", BATCH,
            "--device", "cpu"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """24 readable images and an unreadable one, predicted by 2 ranks into job.csv."""
    root = tmp_path_factory.mktemp("ranks")
    images = make_images(root / "images", per_class=6)
    # Sorted right after amusement_000.jpg: input 1, so rank 1's (rank r takes inputs r, r + 2, ...).
    (images / "amusement" / "amusement_000b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    job = SimpleNamespace(root=root, images=images, run=make_run(root / "run", images), output=root / "out" / "job.csv")
    job.proc = torchrun("-m", "emorec", *predict_args(job, job.output))
    assert job.proc.returncode == 0, job.proc.stderr[-3000:]
    return job


def test_two_ranks_write_the_rows_of_one_process_in_input_order(job, tmp_path):
    single = tmp_path / "single.csv"
    assert main(predict_args(job, single)) == 0
    ranked, alone = rows(job.output), rows(single)
    assert [r["path"] for r in ranked] == [r["path"] for r in alone] and len(alone) == 24
    for a, b in zip(ranked, alone):
        assert [a[f"label_{k}"] for k in range(1, 5)] == [b[f"label_{k}"] for k in range(1, 5)]
        assert [float(a[f"probability_{k}"]) for k in range(1, 5)] == pytest.approx(
            [float(b[f"probability_{k}"]) for k in range(1, 5)], abs=1e-5)
    # Only the output is left: no parts folder, no half-merged temporary file.
    assert sorted(p.name for p in job.output.parent.iterdir()) == ["job.csv"]
    assert job.proc.stderr.count("predicted 24 images") == 1, "only rank 0 reports"


def test_an_unreadable_image_on_one_rank_is_counted_once_and_nothing_else_is_lost(job):
    err = job.proc.stderr
    broken = job.images / "amusement" / "amusement_000b.jpg"
    assert err.count(f"skipped {broken}: ") == 1
    assert "predicted 24 images" in err and "skipped 1 unreadable" in err
    written = {r["path"] for r in rows(job.output)}
    assert written == {str(p) for p in job.images.rglob("*_0??.jpg")}
    # Each rank's throughput, and the total, are reported once.
    table = [line.split() for line in err.splitlines() if line.split()[:1] in (["0"], ["1"], ["total"])]
    assert [t[0] for t in table] == ["0", "1", "total"] and [int(t[1]) for t in table] == [13, 12, 25]


def test_a_job_killed_midway_resumes_to_the_file_of_an_uninterrupted_one(job, tmp_path):
    output = tmp_path / "resumed.csv"
    killed = torchrun(WORKER, "6", *predict_args(job, output))  # rank 1 dies at its 7th row of 12
    assert killed.returncode != 0 and not output.exists()
    [part] = (tmp_path / "resumed.csv.parts").glob("rank-00001-*")
    assert part.read_bytes().count(b"\n") == 4 and not part.read_bytes().endswith(b"\n")  # 1 batch and a torn line

    again = torchrun("-m", "emorec", *predict_args(job, output))
    assert again.returncode == 0, again.stderr[-3000:]
    assert output.read_bytes() == job.output.read_bytes()
    # Rank 1 predicted only the 8 rows its part did not hold.
    assert next(line.split() for line in again.stderr.splitlines() if line.startswith("1 "))[1] == "8"
    assert "resumed:" in again.stderr and not (tmp_path / "resumed.csv.parts").exists()
