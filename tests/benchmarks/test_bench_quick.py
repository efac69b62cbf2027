"""The benchmark scripts run: each documents --quick, the shared helpers write the promised JSON and
headline, and the cheapest pieces run end to end at toy sizes (numbers are not checked, only
that they are produced and well formed)."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
SCRIPTS = ["bench_loader.py", "bench_train_step.py", "bench_infer.py", "bench_gpu.py", "bench_memory.py",
           "bench_accuracy.py", "bench_head_speed.py", "bench_serve.py", "bench_fit.py", "bench_face_recipe.py",
           "bench_distributed_predict.py", "bench_int8.py", "bench_rung_schedules.py"]
HEADLINE = re.compile(r"^(\w+): emorec (\S+) vs reference (\S+) (.+) ratio=(\S+)$")

sys.path.insert(0, str(BENCH))
import _common as C  # noqa: E402


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def load_script(script: str) -> dict:
    """The script's globals, without running it: `run_name` is not "__main__". Module-level
    environment defaults a script sets for itself (bench_head_speed's OMP_WAIT_POLICY) are undone
    so they do not leak into the test process."""
    with mock.patch.dict(os.environ):
        return runpy.run_path(str(BENCH / script), run_name=f"_bench_{Path(script).stem}")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_documents_quick_in_its_help(script):
    # In-process: one import per script instead of one interpreter (about 3 s each) per script.
    parser = load_script(script)["build_parser"]()
    quick = next(a for a in parser._actions if "--quick" in a.option_strings)
    assert quick.help and quick.help.strip(), f"{script}: --quick has no help text"
    assert "--quick" in parser.format_help()
    assert parser.parse_args(["--quick"]).quick is True
    assert parser.parse_args([]).quick is False


def test_finish_writes_json_and_ends_with_the_headline(tmp_path, capsys):
    class Args:
        quick, results = True, tmp_path

    record = C.finish("demo", Args, 30.0, 10.0, "images/s", {"k": 1}, notes=["a note"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "demo: emorec 30 vs reference 10 images/s ratio=3.00"
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["ratio"] == pytest.approx(3.0) == record["ratio"]
    assert {"cpu", "cores", "torch", "device"} <= set(saved["machine"])
    assert saved["details"] == {"k": 1} and saved["notes"] == ["a note"]


def test_a_missing_emorec_piece_is_reported_not_invented(tmp_path, capsys):
    class Args:
        quick, results = True, tmp_path

    module, why = C.optional_import("emorec.no_such_module")
    assert module is None and "emorec.no_such_module" in why
    C.finish("demo", Args, None, 12.5, "images/s", {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "demo: emorec unavailable vs reference 12.5 images/s ratio=n/a"
    assert json.loads((tmp_path / "demo.json").read_text())["emorec"] is None


def test_rate_uses_the_median_of_repeats():
    r = C.rate(100, [1.0, 10.0, 2.0])
    assert r["per_s"] == pytest.approx(50.0)
    assert r["best_per_s"] == pytest.approx(100.0)


@pytest.mark.slow
def test_gpu_benchmark_code_path_runs_on_cpu_at_toy_size(tmp_path):
    """Without CUDA the real run skips; --cpu-smoke drives the same steps and loaders on the CPU."""
    proc = run(str(BENCH / "bench_gpu.py"), "--cpu-smoke", "--minutes", "0.02", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = HEADLINE.match(proc.stdout.strip().splitlines()[-1])
    assert m and m.group(1) == "gpu", proc.stdout
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["details"]["cpu_smoke"] is True
    assert {"emorec loader only", "emorec e2e", "reference e2e", "tensor loader only", "tensor e2e"} <= set(
        saved["details"]["end_to_end"])
    assert "augment.backend=tensor: end to end" in " ".join(saved["notes"])


def test_gpu_benchmark_skips_cleanly_without_cuda(tmp_path, capsys, monkeypatch):
    import torch

    # CUDA hidden in-process, so the skip path is checked on any machine, with or without a GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main = load_script("bench_gpu.py")["main"]
    assert main(["--quick", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.splitlines() == [out]  # one line
    assert out.startswith("gpu: skipped, no CUDA device")
    assert list(tmp_path.iterdir()) == []
