"""The config is the one object passed down: defaults are the recipe, errors name the key."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from emorec.config import (
    PATTERNS,
    RANGES,
    Config,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
    validate_config,
)
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
    cfg = load_config(path, ["train.epochs=3", "model.weights=null", "loss.label_smoothing=0", "model.hidden_dims=[64]",
                          "model.dropout=[0.1]"])
    assert cfg.model.backbone == "convnext_tiny"
    assert cfg.train.epochs == 3
    assert cfg.model.weights is None
    assert cfg.loss.label_smoothing == 0.0 and isinstance(cfg.loss.label_smoothing, float)
    assert cfg.model.hidden_dims == [64] and cfg.model.dropout == [0.1]
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


SHIPPED_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _error(overrides: list[str]) -> str:
    with pytest.raises(EmorecError) as err:
        load_config(None, overrides)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_numbers_written_as_text_are_read_by_the_annotation():
    # YAML 1.1 reads 3e-4 and 1e3 as strings (its floats need a dot); the field says float.
    cfg = load_config(None, ["optim.lr=3e-4", "optim.final_div_factor=1e3", "augment.hflip=.5",
                             "optim.max_lr=1E-2", "train.epochs=+7"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert (cfg.optim.final_div_factor, cfg.augment.hflip, cfg.optim.max_lr) == (1000.0, 0.5, 0.01)
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)


def test_string_fields_keep_what_was_written():
    cfg = load_config(None, ["train.name=2024", "data.source=010", "model.weights=2024-05-01", "train.output_dir=yes"])
    assert (cfg.train.name, cfg.data.source, cfg.model.weights, cfg.train.output_dir) == (
        "2024", "010", "2024-05-01", "yes")
    assert config_from_dict({"train": {"name": 7}}).train.name == "7"  # a plain int from Python code


def test_a_yaml_file_is_typed_by_the_annotations_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 3e-4\n  max_lr: 1e-3\ntrain:\n  name: 2024\n  amp: off\n  ema: yes\n"
                    "  seed: 010\nmodel:\n  hidden_dims: [64, 32]\n  dropout: [.2, 1e-1]\neval:\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.optim.max_lr) == (3e-4, 1e-3)
    assert (cfg.train.name, cfg.train.amp, cfg.train.ema, cfg.train.seed) == ("2024", "off", True, 10)
    assert (cfg.model.hidden_dims, cfg.model.dropout) == ([64, 32], [0.2, 0.1])
    assert cfg.eval == Config().eval  # an empty section keeps the defaults


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=true", "'optim.lr': expected a number, got 'true'"),
    ("data.batch_size=on", "'data.batch_size': expected an integer, got 'on'"),
    ("train.epochs=1e2", "'train.epochs': expected an integer, got '1e2'"),
    ("optim.lr=1_000", "'optim.lr': expected a number"),
    ("optim.lr=nan", "'optim.lr': expected a number"),
])
def test_text_that_is_not_a_number_of_that_kind_is_refused(override, expected):
    assert expected in _error([override])
    with pytest.raises(EmorecError, match="'data.batch_size': expected an integer, got True"):
        config_from_dict({"data": {"batch_size": True}})
    with pytest.raises(EmorecError, match="'optim.lr': expected >= optim.lr|'optim.lr': expected > 0"):
        config_from_dict({"optim": {"lr": float("nan")}})


@pytest.mark.parametrize("override, expected", [
    ("data.batch_size=0", "'data.batch_size': expected >= 1, got 0"),
    ("data.image_size=8", "'data.image_size': expected >= 16, got 8"),
    ("data.num_workers=-1", "'data.num_workers': expected >= 0, got -1"),
    ("data.val_fraction=1", "'data.val_fraction': expected a value in [0, 1), got 1.0"),
    ("data.sampling_power=1.5", "'data.sampling_power': expected a value in [0, 1], got 1.5"),
    ("augment.hflip=1.5", "'augment.hflip': expected a value in [0, 1], got 1.5"),
    ("augment.perspective_p=-0.1", "'augment.perspective_p': expected a value in [0, 1]"),
    ("augment.random_erasing=2", "'augment.random_erasing': expected a value in [0, 1]"),
    ("augment.mix_prob=1.01", "'augment.mix_prob': expected a value in [0, 1]"),
    ("augment.switch_prob=-1", "'augment.switch_prob': expected a value in [0, 1]"),
    ("augment.scale_min=0", "'augment.scale_min': expected a value in (0, 1], got 0.0"),
    ("augment.rotation=270", "'augment.rotation': expected a value in [0, 180], got 270.0"),
    ("augment.mixup_alpha=-0.4", "'augment.mixup_alpha': expected >= 0, got -0.4"),
    ("loss.label_smoothing=1", "'loss.label_smoothing': expected a value in [0, 1), got 1.0"),
    ("loss.alpha=0", "'loss.alpha': expected a value in (0, 1], got 0.0"),
    ("loss.gamma=-2", "'loss.gamma': expected >= 0"),
    ("loss.ce_weight=-0.5", "'loss.ce_weight': expected >= 0"),
    ("train.ema_decay=1", "'train.ema_decay': expected a value in (0, 1), got 1.0"),
    ("optim.lr=0", "'optim.lr': expected > 0, got 0.0"),
    ("optim.weight_decay=-1e-4", "'optim.weight_decay': expected >= 0, got -0.0001"),
    ("optim.pct_start=1", "'optim.pct_start': expected a value in (0, 1), got 1.0"),
    ("optim.pct_start=0", "'optim.pct_start': expected a value in (0, 1), got 0.0"),
    ("optim.final_div_factor=0", "'optim.final_div_factor': expected > 0"),
    ("optim.accumulation_steps=0", "'optim.accumulation_steps': expected >= 1, got 0"),
    ("optim.grad_clip=-1", "'optim.grad_clip': expected >= 0"),
    ("train.epochs=0", "'train.epochs': expected >= 1, got 0"),
    ("train.patience=-1", "'train.patience': expected >= 0, got -1"),
    ("train.seed=-1", "'train.seed': expected a value in [0, 4294967295], got -1"),
    ("train.max_bad_steps=0", "'train.max_bad_steps': expected >= 1"),
    ("train.checkpoint_every_steps=-5", "'train.checkpoint_every_steps': expected >= 0"),
    ("train.limit_train_batches=-1", "'train.limit_train_batches': expected >= 0"),
    ("model.attention_reduction=0", "'model.attention_reduction': expected >= 1, got 0"),
    ("model.hidden_dims=[64, 0, 16]", "'model.hidden_dims[1]': expected >= 1, got 0"),
    ("model.dropout=[0.3, 1.0, 0.1]", "'model.dropout[1]': expected a value in [0, 1), got 1.0"),
    ("model.drop_path_rate=1", "'model.drop_path_rate': expected a value in [0, 1)"),
    ("model.freeze_backbone_epochs=-1", "'model.freeze_backbone_epochs': expected >= 0"),
    ("model.backbone_lr_scale=0", "'model.backbone_lr_scale': expected > 0, got 0.0"),
    ("eval.batch_size=0", "'eval.batch_size': expected >= 1, got 0"),
    ("eval.tta_crops=-1", "'eval.tta_crops': expected a value in [0, 5], got -1"),
    ("eval.tta_crops=6", "'eval.tta_crops': expected a value in [0, 5], got 6"),
])
def test_out_of_range_values_are_refused_naming_key_value_and_range(override, expected):
    assert expected in _error([override])


@pytest.mark.parametrize("override, expected", [
    ("train.name=runs/a", "'train.name': expected a folder name without / or \\ (and not . or ..), got 'runs/a'"),
    ("train.name=a\\b", "'train.name': expected a folder name"),
    ("train.name=..", "'train.name': expected a folder name"),
    ("train.name=", "'train.name': expected a non-empty string"),
    ("data.source=", "'data.source': expected a non-empty string (null where it is optional), got ''"),
    ("model.backbone=' '", "'model.backbone': expected a non-empty string"),
    ("train.output_dir=", "'train.output_dir': expected a non-empty string"),
    ("train.device=gpu", "'train.device': expected auto, cpu, mps, cuda or cuda:N, got 'gpu'"),
])
def test_bad_strings_are_refused(override, expected):
    assert expected in _error([override])


def test_valid_strings_pass():
    cfg = load_config(None, ["train.name=run.v2 final", "train.device=cuda:1", "data.source=null"])
    assert (cfg.train.name, cfg.train.device, cfg.data.source) == ("run.v2 final", "cuda:1", None)


@pytest.mark.parametrize("overrides, expected", [
    (["optim.lr=1e-3", "optim.max_lr=1e-4"], "'optim.max_lr': expected >= optim.lr (0.001), the rate OneCycle "
                                             "starts from, got 0.0001"),
    (["model.hidden_dims=[64, 32]"], "'model.dropout': expected one rate per model.hidden_dims entry "
                                     "(2: [64, 32]), got [0.3, 0.15, 0.075]"),
    (["model.dropout=[]"], "'model.dropout': expected one rate per model.hidden_dims entry (3"),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "'data.test_fraction': expected data.val_fraction + "
                                                          "data.test_fraction < 1"),
])
def test_keys_that_must_agree_are_checked_together(overrides, expected):
    assert expected in _error(overrides)


def test_validate_config_rechecks_a_changed_config():
    cfg = load_config(None, ["train.name=x"])
    assert validate_config(cfg) is cfg
    cfg.train.head_only = True
    assert validate_config(cfg) is cfg
    with pytest.raises(EmorecError, match="'train.epochs': expected >= 1, got 0"):
        validate_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=0)))
    cfg.optim.lr = "3e-4"  # text is read only from YAML and --set; set in code it is a type error
    with pytest.raises(EmorecError, match="'optim.lr': expected a number, got '3e-4'"):
        validate_config(cfg)
    cfg.optim.lr = 3e-4
    cfg.train = None
    with pytest.raises(EmorecError, match="config section 'train'"):
        validate_config(cfg)


def test_an_invalid_config_is_never_saved(tmp_path):
    cfg = Config()
    cfg.model.hidden_dims = [16]
    with pytest.raises(EmorecError, match="model.dropout"):
        save_config(cfg, tmp_path / "config.yaml")
    assert not (tmp_path / "config.yaml").exists()


def test_saved_numeric_looking_values_round_trip(tmp_path):
    cfg = load_config(None, ["train.name=2024", "optim.lr=1e-12", "optim.max_lr=1e-12", "train.amp=off",
                             "data.source=yes"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    assert validate_config(load_config(path)) is not None


def test_shipped_configs_are_found():
    assert {p.name for p in SHIPPED_CONFIGS} >= {"baseline.yaml", "demo.yaml", "faces.yaml", "high_accuracy.yaml"}


def _leaf_fields(cls=Config, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaf_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp


def test_every_number_field_has_a_range_and_every_rule_names_a_field():
    fields = dict(_leaf_fields())
    numbers = {k for k, tp in fields.items() if tp in (int, float, list[int], list[float])}
    assert numbers == set(RANGES)
    assert set(PATTERNS) <= {k for k, tp in fields.items() if tp is str}
    assert validate_config(Config()) is not None  # the defaults are inside every range


def test_tta_crop_range_matches_the_crop_views():
    from emorec.data.views import CROP_ANCHORS

    assert RANGES["eval.tta_crops"] == f"[0, {len(CROP_ANCHORS)}]"
