"""Built-in models as a mechanism, on a tiny stand-in: names resolve wherever a RUN is taken, a
damaged install is one line, `models build` stores float16 weights and writes a card whose
figures are measured, `emorec models` lists them."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from emorec.cli import main
from emorec.errors import EmorecError
from emorec.zoo import build as zoo_build
from emorec.zoo import recipes, registry
from emorec.zoo.card import render_card
from emorec.zoo.recipes import Recipe, Scoring

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from run_factory import make_run, one_torch_thread  # noqa: E402,F401 (one_torch_thread: autouse fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))
from video_files import numbered_frames, write_video  # noqa: E402


@pytest.fixture
def shared(tmp_path, class_images) -> Path:
    """A stand-in for ../shared: datasets/tiny (an ImageFolder) and its labels.csv with splits."""
    root = tmp_path / "shared"
    class_images(root / "datasets" / "tiny", {"amusement": 9, "anger": 9, "awe": 9, "fear": 9}, size=40)
    return root


@pytest.fixture
def built(tmp_path, shared, monkeypatch):
    """`models build faces --no-train` over a tiny run, into a temporary models folder."""
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    run = make_run(work / "faces", shared / "datasets" / "tiny")
    with open(run / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(shared / "datasets" / "tiny" / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for row in rows:
            writer.writerow([Path(row["path"]).relative_to(shared / "datasets" / "tiny").as_posix(), row["label"], row["split"]])
    recipe = dataclasses.replace(
        recipes.FACES, commands=(("train", "--set", "data.source={shared}/datasets/tiny", "train.output_dir={work}"),),
        run="{work}/faces", check=Scoring("{shared}/datasets/tiny/labels.csv", "val", "val (tiny)"),
        extra=(Scoring("splits.csv", "test", "test of splits.csv"),), tta="views", ship_splits=True,
        dataset_root="{shared}/datasets/tiny", speed_image_side=40)
    monkeypatch.setitem(recipes.RECIPES, "faces", recipe)
    card = zoo_build.build_builtin("faces", shared, work, train=False)
    return {"card": card, "run": run, "shared": shared, "recipe": recipe, "folder": tmp_path / "models" / "faces"}


def test_build_stores_float16_weights_that_predict_like_the_run(built, tmp_path):
    from emorec.run_model import load_run_model

    stored = torch.load(built["folder"] / "checkpoints" / "best.pt", weights_only=True)
    assert stored["stored_as"] == "float16" and "optimizer" not in stored
    assert all(v.dtype == torch.float16 for v in stored["model"].values() if v.is_floating_point())
    original, shipped = load_run_model(built["run"]), load_run_model("faces")
    assert next(shipped.model.parameters()).dtype == torch.float32  # loaded as float32
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        a, b = torch.softmax(original.model(x), 1), torch.softmax(shipped.model(x), 1)
    assert float((a - b).abs().max()) < 1e-2
    assert shipped.label_map.names == ["amusement", "anger", "awe", "fear"]


def test_the_card_holds_measured_figures_and_renders_from_them(built):
    from emorec.zoo.scoring import score, scoring_samples

    folder, recipe = built["folder"], built["recipe"]
    card = json.loads((folder / "card.json").read_text())
    assert (folder / "MODEL_CARD.md").read_text() == render_card(card, recipe)
    samples = scoring_samples(recipe.check, built["shared"], folder)
    assert card["check"]["images"] == len(samples) == 12
    again = score(folder, samples)
    assert card["check"]["accuracy"] == pytest.approx(again["accuracy"], abs=1e-4)
    assert set(card["check"]["per_class_f1"]) == {"amusement", "anger", "awe", "fear"}
    assert card["check"]["tta"]["mode"] == "views" and 0 <= card["check"]["ece"] <= 1
    # the shipped split: dataset-relative paths, the run's own rows
    with open(folder / "splits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and not Path(rows[0]["path"]).is_absolute()
    assert card["extra"][0]["images"] == sum(r["split"] == "test" for r in rows)
    assert card["checkpoint"]["sha256"] == registry.file_sha256(folder / "checkpoints" / "best.pt")
    assert card["speed"]["images_per_s_batch16"] > 0
    assert "Not for" in (folder / "MODEL_CARD.md").read_text()


def test_a_name_works_wherever_a_run_is_taken(built, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    photo = next((built["shared"] / "datasets" / "tiny" / "awe").iterdir())
    assert main(["predict", "faces", str(photo), "--output", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", newline="") as f:
        assert next(csv.DictReader(f))["label_1"] in {"amusement", "anger", "awe", "fear"}
    labels = built["shared"] / "datasets" / "tiny" / "labels.csv"
    assert main(["evaluate", "faces", "--data", str(labels), "--split", "val", "--no-tta"]) == 0
    assert "evaluated 12 images" in capsys.readouterr().out
    # the package folder may be read-only: reports and exports go elsewhere
    assert (tmp_path / "runs" / "faces" / "eval" / "tiny-val" / "metrics.json").is_file()
    assert main(["export", "faces"]) == 0
    exported = list((tmp_path / "cache" / "emorec" / "builtin").glob("faces-*/export/model.onnx"))
    assert len(exported) == 1 and not (built["folder"] / "export").exists()
    assert main(["explain", "faces", str(photo), "--output", str(tmp_path / "why")]) == 0
    assert list((tmp_path / "why").glob("*.png"))
    clip = write_video(tmp_path / "clip.mp4", numbered_frames(10), fps=10)
    assert main(["predict", "faces", str(clip), "--fps", "5", "--output", str(tmp_path / "v.csv")]) == 0
    with open(tmp_path / "v.csv", newline="") as f:
        assert [row["frame"] for row in csv.DictReader(f)] == ["0", "2", "4", "6", "8"]


def test_a_local_folder_wins_over_a_name_and_unknown_names_are_listed(built, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert registry.resolve_model("faces") == built["folder"]
    (tmp_path / "faces").mkdir()
    assert registry.resolve_model("faces") == Path("faces")
    with pytest.raises(EmorecError, match=r"model 'smiles' not found: .*built-in: faces, photos"):
        registry.resolve_model("smiles")
    assert registry.resolve_model("runs/missing") == Path("runs/missing")  # the caller's own "not found"


@pytest.mark.parametrize("damage", ["truncate", "delete", "card"])
def test_a_damaged_install_is_one_line_naming_the_file(built, damage, capsys):
    weights = built["folder"] / "checkpoints" / "best.pt"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "delete":
        weights.unlink()
    else:
        (built["folder"] / "card.json").write_text("{")
    with pytest.raises(EmorecError) as err:
        registry.resolve_model("faces")
    message = str(err.value)
    assert "\n" not in message and "emorec models build faces" in message
    assert ("card.json" if damage == "card" else "best.pt") in message
    photo = next((built["shared"] / "datasets" / "tiny" / "awe").iterdir())
    assert main(["predict", "faces", str(photo)]) == 2
    assert "emorec: error: built-in model 'faces'" in capsys.readouterr().err


def test_models_lists_every_builtin_with_its_figure(built, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    card = json.loads((built["folder"] / "card.json").read_text())
    assert "faces\n  labels   amusement, anger, awe, fear" in out
    assert f"{100 * card['check']['tta']['accuracy']:.1f}% top-1 (views)" in out
    assert "photos" in out and "unusable" in out  # the stand-in models folder has no photos model


def test_build_refuses_a_shared_folder_without_datasets(tmp_path, capsys):
    assert main(["models", "build", "faces", "--shared", str(tmp_path), "--no-train"]) == 2
    assert "has no datasets/ folder" in capsys.readouterr().err
    assert main(["models", "build", "smiles", "--shared", str(tmp_path)]) == 2
