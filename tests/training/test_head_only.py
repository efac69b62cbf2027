"""Head-only training: cached backbone features are a data source of the one trainer. The run
directory is a normal one whose checkpoint holds the whole classifier (frozen backbone + head)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from emorec.api import train
from emorec.cli import main
from emorec.config import config_from_dict
from emorec.errors import EmorecError
from emorec.training.sources import FeatureBatches, head_batch_size
from training_runs import (  # noqa: F401 (cache, data and one_thread are fixtures)
    cache, data, extract_cache, head_only, make_images, metric_rows, one_thread, tiny_config, tiny_overrides,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_head_only_run_is_a_normal_run_whose_checkpoint_matches_the_pixels(data, cache, tmp_path):
    from emorec.data.imageio import load_rgb
    from emorec.data.transforms import build_eval_transform
    from emorec.models.classifier import build_model

    result = train(tiny_config(data, tmp_path, "head", "train.epochs=3", *head_only(cache)))
    run = result.run_dir
    for name in ("config.yaml", "label_map.json", "manifest.csv", "metrics.csv", "summary.json", "train.log",
                 "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert [r["epoch"] for r in metric_rows(run)] == ["1", "2", "3"]
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["config"]["model"]["backbone"] == "test_efficientnet", "adopted from the cache"
    assert ckpt["config"]["train"]["head_only"] and ckpt["label_map"] == cache.label_names

    cfg = config_from_dict(ckpt["config"])
    model = build_model(cfg.model, len(ckpt["label_map"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    val = cache.split("val")
    transform = build_eval_transform(cfg, ckpt["data_mean"], ckpt["data_std"])
    images = torch.stack([transform(load_rgb(p)) for p in val.paths])
    with torch.no_grad():
        from_pixels = model(images)
        from_cache = model.head(torch.from_numpy(np.array(val.pooled[:, 0])))
    torch.testing.assert_close(from_pixels, from_cache, rtol=1e-3, atol=1e-4)


def test_the_readme_flow_extracts_once_and_train_head_only_finds_the_cache(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default cache root is relative: .cache/features
    extract = ["features", "extract", "--backbone", "test_efficientnet", "--random-init", "--image-size", "32",
               "--workers", "0", str(data)]
    assert main(extract) == 0
    assert "cache miss" in capsys.readouterr().out
    overrides = [o for o in tiny_overrides(data, tmp_path / "runs", "head") if not o.startswith("model.backbone")]
    assert main(["train", "--head-only", "--set", "model.backbone=test_efficientnet", "model.pretrained=false",
                 "train.epochs=1", *overrides]) == 0
    out = capsys.readouterr().out
    assert "cache hit" in out and "run dir" in out
    assert main(["train", "--head-only", "--set", "model.backbone=test_efficientnet", "model.pretrained=false",
                 "train.epochs=1", *overrides, "data.image_size=48", "train.name=other"]) == 0
    assert "cache miss" in capsys.readouterr().out, "another image size is another cache, extracted on the spot"


def test_a_reused_run_name_is_refused_for_head_only_runs_too(data, cache, tmp_path):
    train(tiny_config(data, tmp_path, "head", "train.epochs=1", *head_only(cache)))
    with pytest.raises(EmorecError, match="already holds a run"):
        train(tiny_config(data, tmp_path, "head", "train.epochs=1", *head_only(cache)))


@pytest.mark.parametrize("kind", ["images", "features"])
def test_a_run_that_fails_to_start_leaves_nothing_and_can_be_retried(data, cache, tmp_path, monkeypatch, kind):
    import emorec.training.optim as optim

    mode = () if kind == "images" else head_only(cache)
    real = optim.build_scheduler

    def broken(*args, **kwargs):  # the last thing built before the run directory
        raise EmorecError("schedule refused")

    monkeypatch.setattr(optim, "build_scheduler", broken)
    with pytest.raises(EmorecError, match="schedule refused"):
        train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=1", *mode))
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(optim, "build_scheduler", real)
    result = train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=1", *mode))
    assert result.epochs_completed == 1


def test_a_missing_feature_cache_is_a_one_line_error(data, tmp_path):
    with pytest.raises(EmorecError, match="no feature cache|feature cache not found"):
        train(tiny_config(data, tmp_path, "run", "train.head_only=true", f"train.features_dir={tmp_path / 'none'}"))


def test_large_datasets_use_large_batches_small_ones_keep_16_steps():
    assert head_batch_size(20000, 32) == 1024
    assert head_batch_size(20000, 32, accumulation_steps=2) == 512  # an optimizer step still sees 1024
    assert head_batch_size(800, 32) == 50
    assert head_batch_size(100, 32) == 32


def test_feature_batches_resume_mid_epoch_with_the_same_vectors_and_views():
    from emorec.training.data_order import ResumableSampler
    from torch.utils.data import DistributedSampler

    vectors = torch.arange(20 * 3 * 2, dtype=torch.float32).reshape(20, 3, 2)  # (N, V, C): view is readable
    targets = torch.arange(20) % 4

    def epoch_batches(start: int):
        sampler = ResumableSampler(DistributedSampler(range(20), num_replicas=1, rank=0, seed=3))
        sampler.set_epoch(5, start=start)
        return [x.tolist() for x, _, _ in FeatureBatches(vectors, targets, sampler, 4, seed=3)]

    full = epoch_batches(0)
    assert len(full) == 5 and epoch_batches(8) == full[2:]
    views = {int(v[0]) % 6 // 2 for batch in full for v in batch}
    assert views == {0, 1, 2}, "each sample draws one of its cached views"


def test_head_only_training_never_opens_the_images_of_its_cache(tmp_path):
    images = make_images(tmp_path / "gone", per_class=8)
    moved = extract_cache(images, tmp_path / "features")
    shutil.rmtree(images)
    result = train(tiny_config(images, tmp_path, "head", "train.epochs=1", *head_only(moved)))
    assert result.epochs_completed == 1 and (result.run_dir / "manifest.csv").is_file()
    params = json.loads((result.run_dir / "summary.json").read_text())["params"]
    assert params["trainable"] < params["total"], "only the head trains"
