"""`evaluate_run` end to end on a fake run: files written, numbers consistent, errors clear."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from emorec.cli import main
from emorec.errors import EmorecError
from emorec.evaluation.evaluate import evaluate_run

PICTURES = ("confusion_matrix", "confusion_matrix_tta", "per_class_f1", "reliability", "mistakes", "training_curves", "lr_schedule")


def test_writes_report_metrics_and_pictures(fake_run, capsys):
    assert main(["evaluate", str(fake_run), "--tta", "--device", "cpu", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "single view" in printed and "TTA" in printed and "report.md" in printed
    out = fake_run / "eval" / "test"
    for key in PICTURES:
        with Image.open(out / f"{key}.png") as im:
            assert im.format == "PNG" and min(im.size) >= 200
    saved = json.loads((out / "metrics.json").read_text())
    # 4 classes x 12 images, every third one is test.
    assert saved["data"]["num_images"] == 16 and saved["data"]["split_sizes"]["test"] == 16
    assert saved["metrics"]["num_samples"] == 16
    assert saved["tta"]["views"] == 3 and saved["metrics_tta"] is not None
    assert saved["model"]["parameters"] > 0 and saved["training"]["best_epoch"] == 3

    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16
    accuracy = np.mean([r["true"] == r["predicted"] for r in rows])
    tta_accuracy = np.mean([r["true"] == r["predicted_tta"] for r in rows])
    assert saved["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert saved["metrics_tta"]["accuracy"] == pytest.approx(tta_accuracy)
    wrong = sum(r["true"] != r["predicted"] for r in rows)
    assert len(saved["mistakes"]) == min(wrong, 12)

    report = (out / "report.md").read_text()
    assert "| metric | single view | TTA (3 views) |" in report
    assert "![Confusion matrix](confusion_matrix.png)" in report and "## Findings" in report


def test_ten_crop_from_the_command_line(fake_run, tmp_path):
    from emorec.serving.predict import predict

    out = tmp_path / "ten"
    assert main(["evaluate", str(fake_run), "--tta-mode", "ten-crop", "--output", str(out), "--device", "cpu",
                 "--workers", "0"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tta"]["mode"] == "ten-crop" and saved["tta"]["views"] == 10
    assert "ten-crop" in (out / "report.md").read_text()
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    # The single view of ten-crop is the eval crop: the same probabilities as a plain prediction.
    plain, _ = predict(fake_run, [r["path"] for r in rows], top_k=1, tta=False)
    assert [float(r["confidence"]) for r in rows] == pytest.approx([p.top[0][1] for p in plain], abs=1e-5)
    assert [float(r["confidence_tta"]) for r in rows] != pytest.approx([float(r["confidence"]) for r in rows], abs=1e-5)


@pytest.mark.parametrize("argv, expected", [([], None), (["--tta"], True), (["--no-tta"], False),
                                            (["--tta-mode", "ten-crop"], "ten-crop"), (["--tta-mode", "views"], "views"),
                                            (["--no-tta", "--tta-mode", "ten-crop"], False)])
def test_tta_flags_reach_evaluate_run(monkeypatch, argv, expected):
    import emorec.evaluation.evaluate as evaluate

    class Reached(Exception):
        pass

    seen = {}

    def fake_evaluate_run(*args, **kwargs):
        seen.update(kwargs)
        raise Reached

    monkeypatch.setattr(evaluate, "evaluate_run", fake_evaluate_run)
    with pytest.raises(Reached):
        main(["evaluate", "RUN", *argv])
    assert seen["tta"] == expected


def test_without_tta_reports_one_column(fake_run, tmp_path):
    result = evaluate_run(fake_run, split="val", tta=False, output=tmp_path / "out", device="cpu", num_workers=0)
    assert result.metrics_tta is None
    assert not (tmp_path / "out" / "confusion_matrix_tta.png").exists()
    assert "TTA" not in (tmp_path / "out" / "report.md").read_text().split("## Results")[1].split("## Per class")[0]


def _dataset_from(tiny_dataset, root, labels):
    """A new ImageFolder with the images of tiny_dataset's `source` class under `label`."""
    for label, source in labels.items():
        shutil.copytree(tiny_dataset / source, root / label)
    return root


def test_other_dataset_is_mapped_by_label_name(fake_run, tiny_dataset, tmp_path):
    # Only two of the model's four labels, in a folder of its own: indices must follow the run's map.
    other = _dataset_from(tiny_dataset, tmp_path / "other", {"awe": "awe", "fear": "fear"})
    result = evaluate_run(fake_run, data=str(other), tta=False, device="cpu", num_workers=0)
    assert result.output_dir == fake_run / "eval" / "other"
    saved = json.loads((result.metrics_path).read_text())
    assert saved["data"]["class_counts"] == {"amusement": 0, "anger": 0, "awe": 12, "fear": 12}


def test_unknown_label_is_a_clear_error(fake_run, tiny_dataset, tmp_path):
    other = _dataset_from(tiny_dataset, tmp_path / "other", {"awe": "awe", "boredom": "fear"})
    with pytest.raises(EmorecError, match="boredom"):
        evaluate_run(fake_run, data=str(other), device="cpu", num_workers=0)


def test_unreadable_images_are_skipped_and_counted(fake_run):
    with (fake_run / "manifest.csv").open() as f:
        test_rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    with open(test_rows[0]["path"], "wb") as f:
        f.write(b"not a jpeg")
    result = evaluate_run(fake_run, tta=False, device="cpu", num_workers=0)
    saved = json.loads(result.metrics_path.read_text())
    assert saved["data"]["skipped"] == 1 and saved["metrics"]["num_samples"] == 15


def test_cli_reports_a_missing_split_with_exit_code_2(fake_run, capsys):
    assert main(["evaluate", str(fake_run), "--split", "holdout", "--device", "cpu"]) == 2
    assert "holdout" in capsys.readouterr().err


def test_a_real_training_run_evaluates_and_exports(tiny_dataset, tmp_path):
    """One tiny epoch of the real trainer, then evaluate and export its run directory."""
    from emorec.config import load_config
    from emorec.serving.export import export_run
    from emorec.training.trainer import train

    cfg = load_config(overrides=[
        f"data.source={tiny_dataset}", "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
        "data.val_fraction=0.25", "data.test_fraction=0.25",
        "model.backbone=test_resnet", "model.pretrained=false", "model.hidden_dims=[16]", "model.dropout=[0.0]",
        "augment.auto_augment=none", "augment.mix_prob=0.0", "optim.accumulation_steps=1",
        "train.epochs=1", f"train.output_dir={tmp_path}", "train.name=tiny", "eval.tta_crops=1",
    ])
    run = train(cfg).run_dir
    result = evaluate_run(run, tta=True, device="cpu", num_workers=0)
    saved = json.loads(result.metrics_path.read_text())
    assert saved["data"]["num_images"] == saved["data"]["split_sizes"]["test"] > 0
    assert saved["training"]["epochs_completed"] == 1
    assert (result.output_dir / "training_curves.png").is_file()
    [onnx_result] = export_run(run, ("onnx",))
    assert onnx_result.max_abs_diff < 1e-3 and "real images" in onnx_result.parity_inputs
