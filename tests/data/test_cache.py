"""`data cache`: resized JPEG copies plus a manifest that keeps labels and splits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from edge_images import exif_rotated_jpeg, large_jpeg, rgba_png, truncated_jpeg
from PIL import Image

from emorec.cli import main
from emorec.config import DataConfig
from emorec.data.cache import cache_dataset, use_cache
from emorec.data.imageio import load_rgb
from emorec.data.manifest import Manifest, Sample, read_manifest
from emorec.data.split import ensure_splits
from emorec.errors import EmorecError


@pytest.fixture
def mixed(tmp_path) -> Manifest:
    src = tmp_path / "src"
    (src / "joy").mkdir(parents=True)
    (src / "fear").mkdir()
    Image.new("L", (48, 48), 90).save(src / "fear" / "face.jpg", quality=95)
    samples = [
        Sample(str(large_jpeg(src / "joy" / "big.jpg", 1200, 900)), "joy", "train"),
        Sample(str(src / "fear" / "face.jpg"), "fear", "val"),
        Sample(str(rgba_png(src / "joy" / "alpha.png")), "joy", "test"),
        Sample(str(exif_rotated_jpeg(src / "fear" / "rotated.jpg")), "fear", "train"),
        Sample(str(truncated_jpeg(src / "fear" / "broken.jpg")), "fear", "train"),
    ]
    return Manifest(samples, str(src))


def test_cache_resizes_big_photos_copies_small_jpegs_and_skips_broken_files(mixed, tmp_path):
    out = tmp_path / "cache"
    stats = cache_dataset(mixed, out, size=256, workers=1, progress=False)
    assert (stats["images"], stats["failed"], stats["copied"], stats["written"]) == (4, 1, 1, 3)
    cached = read_manifest(out / "manifest.csv")
    by_name = {Path(s.path).name: s for s in cached.samples}
    assert set(by_name) == {"big.jpg", "face.jpg", "alpha.jpg", "rotated.jpg"}
    assert [(s.label, s.split) for s in cached.samples] == [("joy", "train"), ("fear", "val"), ("joy", "test"),
                                                           ("fear", "train")]
    big = Image.open(by_name["big.jpg"].path)
    assert big.format == "JPEG" and big.size == (341, 256)
    assert Path(by_name["face.jpg"].path).read_bytes() == Path(mixed.samples[1].path).read_bytes()
    assert Image.open(by_name["alpha.jpg"].path).mode == "RGB"
    assert load_rgb(by_name["rotated.jpg"].path).size == (20, 60)  # orientation applied in the copy
    assert json.loads((out / "cache.json").read_text())["failed_paths"] == [mixed.samples[4].path]
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert rows[0]["source"] == mixed.samples[0].path and not rows[0]["path"].startswith("/")


def test_rerun_keeps_finished_copies(mixed, tmp_path):
    cache_dataset(mixed, tmp_path / "cache", size=256, workers=1, progress=False)
    again = cache_dataset(mixed, tmp_path / "cache", size=256, workers=1, progress=False)
    assert again["kept"] == 4 and again["written"] == again["copied"] == 0


def test_training_reads_the_cache_through_data_cache_dir(tiny_dataset, tmp_path):
    manifest = read_manifest(tiny_dataset)
    cache_dataset(manifest, tmp_path / "cache", size=32, workers=2, progress=False)
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    split = ensure_splits(manifest, cfg)
    plain = ensure_splits(manifest, DataConfig())
    assert [(s.label, s.split) for s in split.samples] == [(s.label, s.split) for s in plain.samples]
    assert all(str(tmp_path / "cache") in s.path and Image.open(s.path).size == (32, 32) for s in split.samples)
    partial = Manifest(manifest.samples + [Sample(str(tmp_path / "new.jpg"), "awe")], manifest.source)
    with pytest.raises(EmorecError, match="1 images .* not in the cache"):
        use_cache(partial, tmp_path / "cache")
    with pytest.raises(EmorecError, match="no manifest.csv in cache folder"):
        use_cache(manifest, tmp_path)


def test_cache_cli_writes_the_copy_and_refuses_bad_arguments(tiny_dataset, tmp_path, capsys):
    assert main(["data", "cache", str(tiny_dataset), "--size", "32", "-o", str(tmp_path / "c"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 48
    assert len(read_manifest(tmp_path / "c" / "manifest.csv").samples) == 48
    assert main(["data", "cache", str(tiny_dataset), "--size", "8", "-o", str(tmp_path / "d")]) == 2
    assert main(["data", "cache", str(tiny_dataset), "-o", str(tiny_dataset / "amusement")]) == 2
    assert "holds the source images" in capsys.readouterr().err
