"""`emorec train | check | demo` from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from emorec.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_runs import make_images, one_thread, tiny_overrides  # noqa: E402, F401 (one_thread is a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("data") / "images", per_class=12)


def test_train_then_resume_from_the_command_line(data, tmp_path, capsys):
    args = tiny_overrides(data, tmp_path, "cli", "train.epochs=1", "train.limit_train_batches=2")
    assert main(["train", "--set", *args]) == 0
    out = capsys.readouterr().out
    assert "val macro-F1" in out and f"run dir          {tmp_path / 'cli'}" in out
    assert main(["train", "--resume", str(tmp_path / "cli"), "--set", "train.epochs=2"]) == 0
    assert "epochs           2" in capsys.readouterr().out


def test_train_reports_bad_input_on_one_line_with_exit_2(tmp_path, capsys):
    assert main(["train", "--set", "train.epochs=1"]) == 2
    assert "data.source is not set" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--config", "x.yaml"]) == 2
    assert "drop --config" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["pil", "tensor"])
def test_check_prints_shapes_parameters_device_and_dataset(data, capsys, backend):
    assert main(["check", "--data", str(data), "--set", "model.backbone=test_resnet", "model.pretrained=false",
                 "data.image_size=32", "model.hidden_dims=[16]", "model.dropout=[0.1]",
                 f"augment.backend={backend}"]) == 0
    out = capsys.readouterr().out
    for word in ("device", "input", "feature map", "logits", "parameters", "dataset", "classes", "check passed"):
        assert word in out
    assert "4 x 3 x 32 x 32" in out and "4 x 4" in out  # 4 images in, 4 classes out


def test_check_without_data_says_how_to_give_it(capsys):
    assert main(["check", "--set", "model.backbone=test_resnet"]) == 2
    assert "pass --data" in capsys.readouterr().err


def test_demo_without_data_says_how_to_point_it_at_a_dataset(capsys):
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data FOLDER_OR_CSV" in err[0]


def test_demo_runs_its_config_on_the_given_data(data, tmp_path, capsys):
    # The shipped demo config, shrunk: a test_* model and one batch, so it takes seconds.
    assert main(["demo", "--data", str(data), "--set", "model.backbone=test_efficientnet", "model.weights=null",
                 "data.image_size=32", "data.num_workers=0", "train.epochs=1", "train.limit_train_batches=1",
                 f"train.output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "val accuracy" in out and "val macro-F1" in out
    runs = list(tmp_path.glob("demo-*"))
    assert len(runs) == 1 and str(runs[0]) in out


def test_the_cli_asks_openmp_for_passive_waits_before_torch_loads():
    import subprocess
    import sys

    code = ("import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); from emorec.cli import main; main(['data']); "
            "assert 'torch' not in sys.modules; print(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE", out.stderr[-2000:]

TINY_MODEL = ("model.backbone=test_efficientnet", "model.weights=null", "data.image_size=32", "data.num_workers=0",
              "train.epochs=1", "train.limit_train_batches=1")


def _grey_faces(root, per_class=12):
    """48 px mode-L images in class folders: what FER-2013 looks like to the demo."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, label in enumerate(("angry", "happy", "sad")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(60 * c + rng.normal(80, 30, (48, 48)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / label / f"{i:03d}.jpg", quality=90)
    return root


def test_demo_picks_the_face_recipe_for_small_grayscale_images(tmp_path, capsys):
    faces = _grey_faces(tmp_path / "faces")
    assert main(["demo", "--data", str(faces), "--set", *TINY_MODEL, f"train.output_dir={tmp_path}"]) == 0
    err = capsys.readouterr().err
    assert "demo recipe: faces.yaml: small grayscale images (median shorter side 48 px, 100% grayscale" in err
    [run] = tmp_path.glob("demo-*")
    from emorec.api import FACES_CONFIG
    from emorec.config import load_config

    saved, faces_cfg = load_config(run / "config.yaml"), load_config(FACES_CONFIG)
    assert (saved.augment, saved.loss, saved.optim) == (faces_cfg.augment, faces_cfg.loss, faces_cfg.optim)
    # the user's --set wins over the demo's caps (train.epochs=2)
    assert saved.train.epochs == 1 and saved.train.limit_train_batches == 1


def test_demo_keeps_the_photo_recipe_for_colour_images(data, tmp_path, capsys):
    assert main(["demo", "--data", str(data), "--set", *TINY_MODEL, f"train.output_dir={tmp_path}"]) == 0
    assert "demo recipe: demo.yaml: photos (median shorter side 40 px, 0% grayscale" in capsys.readouterr().err
