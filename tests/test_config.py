"""The config is the one object passed down: defaults are the recipe, errors name the key."""

import pytest
import yaml

from emorec.config import Config, apply_overrides, config_from_dict, load_config, save_config
from emorec.errors import EmorecError


def test_defaults_are_the_high_accuracy_recipe():
    cfg = Config()
    assert cfg.model.backbone == "resnet50" and cfg.model.pretrained and cfg.model.attention
    assert cfg.model.dropout == [0.3, 0.15, 0.075]
    assert (cfg.loss.name, cfg.loss.gamma, cfg.loss.alpha) == ("focal", 2.0, 0.25)
    assert (cfg.optim.lr, cfg.optim.max_lr, cfg.optim.weight_decay) == (3e-4, 1e-3, 1e-4)
    assert (cfg.optim.accumulation_steps, cfg.optim.grad_clip) == (2, 1.0)
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.train.patience) == (80, 32, 20)
    assert (cfg.augment.mixup_alpha, cfg.augment.cutmix_alpha) == (0.4, 1.0)


def test_yaml_then_overrides_with_dotted_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"backbone": "convnext_tiny"}, "train": {"epochs": 40}}))
    cfg = load_config(path, ["train.epochs=3", "model.weights=null", "loss.label_smoothing=0", "model.hidden_dims=[64]"])
    assert cfg.model.backbone == "convnext_tiny"
    assert cfg.train.epochs == 3
    assert cfg.model.weights is None
    assert cfg.loss.label_smoothing == 0.0 and isinstance(cfg.loss.label_smoothing, float)
    assert cfg.model.hidden_dims == [64]
    assert cfg.run_dir.as_posix() == "runs/emorec"


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.name=x", "data.source=/data/fi", "augment.auto_augment=randaugment"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("trainer.epochs=3", "unknown config key 'trainer'"),
        ("loss.name=dice", "choose one of focal, ce, combined"),
        ("train.epochs=ten", "'train.epochs': expected an integer"),
        ("model.attention=maybe", "'model.attention': expected true or false"),
        ("model.dropout=[0.3, high]", "'model.dropout[1]': expected a number"),
        ("train.epochs", "not key=value"),
    ],
)
def test_bad_keys_and_types_are_one_line_errors(override, expected):
    with pytest.raises(EmorecError) as err:
        load_config(None, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_lists_valid_choices():
    with pytest.raises(EmorecError, match="valid keys here: .*loss.gamma"):
        config_from_dict({"loss": {"gama": 1.0}})


def test_missing_or_invalid_yaml_file(tmp_path):
    with pytest.raises(EmorecError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(EmorecError, match="not valid YAML"):
        load_config(bad)


def test_overrides_do_not_mutate_input():
    values = {"train": {"epochs": 5}}
    apply_overrides(values, ["train.epochs=7"])
    assert values == {"train": {"epochs": 5}}
