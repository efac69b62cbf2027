"""`--resume`: a run that stopped continues exactly, refuses foreign checkpoints, extends, and
survives a corrupt last checkpoint."""

from __future__ import annotations

import pytest

import emorec.training.trainer as trainer
from emorec.config import load_config
from emorec.errors import EmorecError
from emorec.training.trainer import train
from training_runs import (  # noqa: F401 (one_thread is a fixture)
    SAME_RESULT_COLUMNS, checkpoint_weights, make_images, max_abs_diff, metric_rows, tiny_config, one_thread,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# MixUp, dropout, augmentation, weighted sampling and EMA all on: everything random must resume.
RANDOM_PARTS = ("augment.mix_prob=0.5", "train.ema=true", "train.epochs=3")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("data") / "images", per_class=16)


def crash_in_epoch(monkeypatch, epoch: int) -> None:
    """Make the run die (like a killed machine) when epoch `epoch` starts."""
    real = trainer.train_one_epoch
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", dying)


def test_stop_after_epoch_1_and_resume_gives_the_uninterrupted_results(data, tmp_path, monkeypatch):
    whole = train(tiny_config(data, tmp_path, "whole", *RANDOM_PARTS))
    with monkeypatch.context() as m:
        crash_in_epoch(m, 2)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(tiny_config(data, tmp_path, "split", *RANDOM_PARTS))
    assert [r["epoch"] for r in metric_rows(tmp_path / "split")] == ["1"]
    resumed = train(load_config(tmp_path / "split" / "config.yaml"), resume=tmp_path / "split")

    assert resumed.epochs_completed == 3 and len(resumed.history) == 3
    for a, b in zip(whole.history, resumed.history):
        assert {k: a[k] for k in SAME_RESULT_COLUMNS} == {k: b[k] for k in SAME_RESULT_COLUMNS}
    assert max_abs_diff(checkpoint_weights(tmp_path / "whole"), checkpoint_weights(tmp_path / "split")) == 0.0
    assert len(metric_rows(tmp_path / "split")) == 3


def test_a_larger_epoch_count_extends_a_finished_run(data, tmp_path):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=2"))
    cfg = load_config(tmp_path / "run" / "config.yaml", ["train.epochs=2"])
    result = train(cfg, resume=tmp_path / "run")
    assert result.epochs_completed == 2 and [r["epoch"] for r in metric_rows(tmp_path / "run")] == ["1", "2"]
    assert load_config(tmp_path / "run" / "config.yaml").train.epochs == 2


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_epoch(data, tmp_path, capsys):
    train(tiny_config(data, tmp_path, "run", "train.limit_train_batches=2"))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    capsys.readouterr()
    result = train(load_config(tmp_path / "run" / "config.yaml"), resume=tmp_path / "run")
    err = capsys.readouterr().err
    assert "last.pt is truncated or corrupt" in err and "using the previous checkpoint" in err
    assert "resumed" in (tmp_path / "run" / "train.log").read_text()
    assert result.epochs_completed == 2 and [r["epoch"] for r in metric_rows(tmp_path / "run")] == ["1", "2"]


@pytest.mark.parametrize("override, message", [
    ("model.backbone=test_efficientnet", "made by a different model .*backbone"),
    ("model.hidden_dims=[32]", "made by a different model .*hidden_dims"),
])
def test_a_checkpoint_of_another_model_is_refused(data, tmp_path, override, message):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=1"))
    cfg = load_config(tmp_path / "run" / "config.yaml", [override, "train.epochs=2"])
    with pytest.raises(EmorecError, match=message):
        train(cfg, resume=tmp_path / "run")


def test_a_checkpoint_of_another_label_map_is_refused(data, tmp_path):
    train(tiny_config(data, tmp_path, "run", "train.epochs=1", "train.limit_train_batches=1"))
    manifest = tmp_path / "run" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",awe,", ",wonder,"))
    with pytest.raises(EmorecError, match=r"trained on labels .* but the data has"):
        train(load_config(tmp_path / "run" / "config.yaml", ["train.epochs=2"]), resume=tmp_path / "run")
