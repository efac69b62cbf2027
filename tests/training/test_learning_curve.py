"""learning_curve.png: validation scores against the run's wall time, from metrics.csv rows."""

from __future__ import annotations

from PIL import Image

from emorec.training.learning_curve import plot_learning_curve, wall_minutes


def _rows(with_wall_time: bool):
    rows = []
    for epoch in (1, 2, 3):
        row = {"epoch": str(epoch), "lr": str(1e-3 / epoch), "val_accuracy": str(0.4 + 0.1 * epoch),
               "val_macro_f1": str(0.3 + 0.1 * epoch), "epoch_seconds": "60"}
        if with_wall_time:
            row["wall_time_s"] = str(90 * epoch)  # validation and checkpoints take time too
        rows.append(row)
    return rows


def test_the_x_axis_is_the_logged_wall_time_else_the_summed_epoch_times():
    assert wall_minutes(_rows(True)) == [1.5, 3.0, 4.5]
    assert wall_minutes(_rows(False)) == [1.0, 2.0, 3.0]  # metrics.csv of runs from before the column


def test_writes_a_png(tmp_path):
    path = plot_learning_curve(_rows(True), tmp_path / "learning_curve.png", title="run")
    with Image.open(path) as picture:
        picture.verify()
        assert picture.format == "PNG"
    assert not list(tmp_path.glob("*.tmp"))
