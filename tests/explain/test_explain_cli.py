"""`emorec explain`: an overlay per image at the image's size, a grid of them, `--class`,
unreadable images skipped and reported, and one-line refusals for what cannot be explained."""

from __future__ import annotations

import numpy as np
from PIL import Image

from emorec.cli import main
from emorec.serving.export import export_run


def test_writes_an_overlay_per_image_and_a_grid(fake_run, tiny_dataset, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.open(next((tiny_dataset / "awe").iterdir())).resize((90, 60)).save(images / "wide.png")
    Image.open(next((tiny_dataset / "fear").iterdir())).save(images / "square.jpg")
    out = tmp_path / "explained"
    assert main(["explain", str(fake_run), str(images), "--output", str(out), "--device", "cpu"]) == 0
    overlays = sorted(p for p in out.glob("*.png") if p.name != "explanations.png")
    assert [p.name.split("_")[0] for p in overlays] == ["square", "wide"]
    sizes = {p.name.split("_")[0]: Image.open(p).size for p in overlays}
    assert sizes == {"square": (48, 48), "wide": (90, 60)}
    assert Image.open(out / "explanations.png").size[0] > 300
    printed = capsys.readouterr().out
    assert "predicted" in printed and "heat map of" in printed


def test_a_corrupt_and_a_missing_image_are_reported_through_load_or_failure(fake_run, tiny_dataset, tmp_path, watch_loads):
    import emorec.explain.explain as explain

    seen = watch_loads(explain)
    good = next((tiny_dataset / "awe").iterdir())
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    listed = tmp_path / "list.csv"  # a CSV may name a file that is gone: only decoding finds out
    listed.write_text(f"path\n{good}\ncorrupt.jpg\nmissing.jpg\n")
    result = explain.explain_images(fake_run, [listed], tmp_path / "explained", device="cpu")
    assert [e.path for e in result.explanations] == [str(good)]
    assert [f.path for f in result.failures] == [str(tmp_path / "corrupt.jpg"), str(tmp_path / "missing.jpg")]
    assert seen == [(good.name, False), ("corrupt.jpg", True), ("missing.jpg", True)]


def test_class_option_explains_the_named_class(fake_run, tiny_dataset, tmp_path):
    out = tmp_path / "explained"
    image = next((tiny_dataset / "awe").iterdir())
    assert main(["explain", str(fake_run), str(image), "--output", str(out), "--class", "anger", "--device", "cpu"]) == 0
    assert [p.name for p in out.glob("*_anger.png")] == [f"{image.stem}_anger.png"]
    overlay = np.asarray(Image.open(out / f"{image.stem}_anger.png").convert("RGB"), np.int16)
    assert np.abs(overlay - np.asarray(Image.open(image).convert("RGB"), np.int16)).max() > 0


def test_unknown_class_and_onnx_models_are_refused(fake_run, tiny_dataset, tmp_path, capsys):
    image = str(next((tiny_dataset / "awe").iterdir()))
    assert main(["explain", str(fake_run), image, "--output", str(tmp_path / "a"), "--class", "joy"]) == 2
    assert "amusement, anger, awe, fear" in capsys.readouterr().err
    onnx = export_run(fake_run, ("onnx",), tmp_path / "export")[0].path
    assert main(["explain", str(onnx), image, "--output", str(tmp_path / "b")]) == 2
    assert "cannot be explained" in capsys.readouterr().err


def test_evaluation_report_shows_the_explained_mistakes(fake_run):
    from emorec.evaluation.evaluate import evaluate_run

    result = evaluate_run(fake_run, split="test", tta=False, device="cpu")
    assert result.pictures["mistakes_explained"].is_file()
    assert "Grad-CAM" in result.report_path.read_text()
    picture = Image.open(result.pictures["mistakes_explained"])
    assert picture.size[0] > 400 and picture.size[1] > 200
