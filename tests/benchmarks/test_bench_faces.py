"""benchmarks/bench_faces.py answers --help and, on one collage, writes the promised JSON and
headline (the figures themselves are not checked, only that they are produced and well formed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_faces.py"
HEADLINE = re.compile(r"^faces: emorec (\S+) vs reference (\S+) recall at IoU 0.3 ratio=(\S+)$")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=180)


def test_answers_help_with_quick():
    proc = _run("--help")
    assert proc.returncode == 0 and "--quick" in proc.stdout


@pytest.mark.slow
def test_one_collage_gives_recall_per_detector(fer2013, tmp_path):
    proc = _run("--collages", "1", "--detectors", "mtcnn,haar", "--threads", "1", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert HEADLINE.match(proc.stdout.strip().splitlines()[-1]), proc.stdout
    detectors = json.loads((tmp_path / "faces.json").read_text())["details"]["detectors"]
    assert set(detectors) == {"mtcnn", "haar"}
    for result in detectors.values():
        assert 0.0 <= result["recall"] <= 1.0 and result["faces"] == 24
        assert result["median_s_per_collage"] > 0
