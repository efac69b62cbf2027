"""Checkpoints: atomic writes, fallback to the previous good file, RNG capture, compatibility."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from emorec.errors import EmorecError
from emorec.checkpoint import (
    FORMAT,
    check_compatible,
    load_checkpoint,
    resolve_checkpoint,
    run_dir_of,
    save_checkpoint,
)
from emorec.training.seeding import capture_rng_state, restore_rng_state


def state(epoch: int) -> dict:
    return {"format": FORMAT, "format_version": 1, "epoch": epoch, "model": {"w": torch.full((3,), float(epoch))},
            "label_map": ["a", "b"], "model_signature": {"backbone": "x"}}


def test_save_then_load_round_trips_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(path, state(3))
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 3 and torch.equal(ckpt["model"]["w"], torch.full((3,), 3.0))
    assert ckpt["loaded_from"] == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_keep_previous_moves_the_old_last_to_last_prev(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "last.pt", state(1), keep_previous=True)
    save_checkpoint(folder / "last.pt", state(2), keep_previous=True)
    assert sorted(p.name for p in folder.iterdir()) == ["last.prev.pt", "last.pt"]
    assert torch.load(folder / "last.prev.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("damage, reason", [("truncate", "truncated or corrupt"), ("garbage", "truncated or corrupt"),
                                            ("foreign", "truncated or corrupt"), ("missing", "last.pt is missing")])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage, reason):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "last.pt", state(1), keep_previous=True)
    save_checkpoint(folder / "last.pt", state(2), keep_previous=True)
    last = folder / "last.pt"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "garbage":
        last.write_bytes(b"\x00not a checkpoint" * 10)
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(2)}, last)
    else:
        last.unlink()
    with caplog.at_level(logging.WARNING):
        ckpt = load_checkpoint(tmp_path, which="last")
    assert ckpt["epoch"] == 1 and ckpt["loaded_from"].endswith("last.prev.pt")
    assert reason in caplog.text and "using the previous checkpoint" in caplog.text


def test_no_usable_checkpoint_is_one_clear_error(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"junk")
    with pytest.raises(EmorecError, match="no usable checkpoint: .*last.pt is truncated or corrupt.*last.prev.pt is missing"):
        load_checkpoint(tmp_path)


def test_a_run_dir_means_its_best_checkpoint_else_its_last(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "last.pt", state(2))
    assert resolve_checkpoint(tmp_path) == folder / "last.pt"
    save_checkpoint(folder / "best.pt", state(1))
    assert resolve_checkpoint(tmp_path) == folder / "best.pt"
    assert load_checkpoint(tmp_path)["epoch"] == 1
    # Resuming continues from the last checkpoint, not the best one.
    assert resolve_checkpoint(tmp_path, which="last") == folder / "last.pt"
    assert load_checkpoint(tmp_path, which="last")["epoch"] == 2
    # The checkpoints/ folder itself and a file name work too.
    assert resolve_checkpoint(folder) == folder / "best.pt"
    assert resolve_checkpoint(folder / "last.pt") == folder / "last.pt"
    assert run_dir_of(folder / "best.pt") == tmp_path.resolve()


def test_a_corrupt_best_checkpoint_falls_back_to_the_last(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "last.pt", state(2))
    (folder / "best.pt").write_bytes(b"junk")
    with caplog.at_level(logging.WARNING):
        ckpt = load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 2 and ckpt["loaded_from"] == str(folder / "last.pt")
    assert "best.pt is truncated or corrupt" in caplog.text


def test_no_checkpoint_and_no_path_are_clear_errors(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(EmorecError, match="no checkpoint in run directory .*best.pt or last.pt"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(EmorecError, match="no checkpoint in run directory"):
        load_checkpoint(tmp_path)
    with pytest.raises(EmorecError, match="not found: .*nothing"):
        load_checkpoint(tmp_path / "nothing")


def test_rng_state_survives_a_checkpoint_round_trip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "c.pt", {**state(0), "rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_checkpoint_of_another_label_map_is_refused():
    ckpt = {**state(1), "loaded_from": "runs/x/checkpoints/last.pt"}
    with pytest.raises(EmorecError, match=r"trained on labels \['a', 'b'\] but the data has \['a', 'c'\]"):
        check_compatible(ckpt, None, ["a", "c"])


def test_early_stopping_restores_its_monitor_and_direction():
    from emorec.training.early_stopping import EarlyStopping

    saved = EarlyStopping("val_loss", 3)
    saved.update(0.5, 1)
    restored = EarlyStopping("val_macro_f1", 3)
    restored.load_state_dict(saved.state_dict())
    assert restored.monitor == "val_loss" and restored.mode == "min"
    assert not restored.update(0.6, 2) and restored.update(0.4, 3)
