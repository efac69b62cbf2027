"""`emorec features extract`: a thin command over extract_features, with one-line errors."""

from __future__ import annotations

from pathlib import Path

from emorec.cli import main


def test_extract_twice_second_is_a_cache_hit(tiny_dataset: Path, tmp_path: Path, capsys):
    args = ["features", "extract", str(tiny_dataset), "--backbone", "test_efficientnet", "--random-init",
            "--image-size", "32", "--views", "1", "--grid", "2", "--workers", "0",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "cache miss" in first and "train" in first and "3 views" in first
    assert main(args) == 0
    assert "cache hit" in capsys.readouterr().out


def test_missing_weights_file_exits_2_with_one_line(tiny_dataset: Path, tmp_path: Path, capsys):
    code = main(["features", "extract", str(tiny_dataset), "--backbone", "test_efficientnet",
                 "--weights", str(tmp_path / "nope.safetensors"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "nope.safetensors" in err and len(err.splitlines()) == 1
