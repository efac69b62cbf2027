"""`predict` on files, folders and CSVs; corrupt inputs are reported and skipped, never fatal."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from emorec.cli import main
from emorec.data.inputs import collect_inputs
from emorec.serving.export import export_run
from emorec.serving.predict import predict


def _folder_with_a_corrupt_file(tiny_dataset):
    folder = tiny_dataset / "awe"
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    return folder


def test_a_corrupt_file_is_reported_and_the_others_are_written(fake_run, tiny_dataset, tmp_path, capsys):
    folder = _folder_with_a_corrupt_file(tiny_dataset)
    out = tmp_path / "pred.csv"
    code = main(["predict", str(fake_run), str(folder), "--output", str(out), "--top-k", "2", "--device", "cpu"])
    assert code == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12  # the 12 good images of the class folder
    assert set(rows[0]) == {"path", "label_1", "probability_1", "label_2", "probability_2"}
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) for r in rows)
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "skipped 1 unreadable" in err


def test_folders_are_searched_recursively_and_csv_manifests_read(tiny_dataset, tmp_path):
    paths, failures = collect_inputs([tiny_dataset, tmp_path / "missing.jpg"])
    assert len(paths) == 48 and [f.path for f in failures] == [str(tmp_path / "missing.jpg")]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},x\n" for p in paths[:5]))
    assert collect_inputs([manifest])[0] == paths[:5]


def test_jsonl_output_and_probabilities_sum_to_one(fake_run, tiny_dataset, tmp_path):
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(fake_run), str(tiny_dataset / "fear"), "--output", str(out), "--top-k", "4", "--device", "cpu"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12
    assert all(sum(p["probability"] for p in r["predictions"]) == pytest.approx(1.0, abs=1e-4) for r in records)


def test_tta_changes_probabilities_but_keeps_them_normalised(fake_run, tiny_dataset):
    plain, _ = predict(fake_run, [tiny_dataset / "anger"], top_k=4, tta=False)
    tta, _ = predict(fake_run, [tiny_dataset / "anger"], top_k=4, tta=True)
    assert len(plain) == len(tta) == 12
    assert any(dict(a.top) != pytest.approx(dict(b.top)) for a, b in zip(plain, tta))
    assert all(sum(p for _, p in t.top) == pytest.approx(1.0, abs=1e-5) for t in tta)


def test_onnx_model_predicts_like_pytorch(fake_run, tiny_dataset, tmp_path):
    [result] = export_run(fake_run, ("onnx",), tmp_path / "export")
    folder = _folder_with_a_corrupt_file(tiny_dataset)
    for tta in (False, True, "ten-crop"):
        torch_preds, torch_failures = predict(fake_run, [folder], top_k=4, tta=tta)
        onnx_preds, onnx_failures = predict(result.path, [folder], top_k=4, tta=tta)
        assert len(onnx_failures) == len(torch_failures) == 1
        assert [p.path for p in onnx_preds] == [p.path for p in torch_preds]
        for a, b in zip(onnx_preds, torch_preds):
            np.testing.assert_allclose([dict(a.top)[k] for k in dict(b.top)], [p for _, p in b.top], atol=1e-4)


def test_onnx_prediction_does_not_import_torch(fake_run, tiny_dataset, tmp_path):
    import subprocess
    import sys

    [result] = export_run(fake_run, ("onnx",), tmp_path / "export")
    script = (
        "import sys\n"
        "from emorec.serving.predict import predict\n"
        f"predictions, failures = predict({str(result.path)!r}, [{str(tiny_dataset / 'awe')!r}], top_k=2, tta=True)\n"
        "assert len(predictions) == 12 and not failures\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_tta_mode_on_the_command_line_implies_tta(fake_run, tiny_dataset, tmp_path):
    out = tmp_path / "ten.csv"
    assert main(["predict", str(fake_run), str(tiny_dataset / "awe"), "--tta-mode", "ten-crop", "--top-k", "1",
                 "--output", str(out), "--device", "cpu"]) == 0
    with out.open() as f:
        written = {r["path"]: float(r["probability_1"]) for r in csv.DictReader(f)}
    ten, _ = predict(fake_run, [tiny_dataset / "awe"], top_k=1, tta="ten-crop")
    assert written == pytest.approx({p.path: p.top[0][1] for p in ten}, abs=1e-5)
