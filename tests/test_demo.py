"""The main job writes every .tflite file, the JSON and Markdown reports and the plot."""

from __future__ import annotations

import json

import pytest

from tfcompress.demo import run_demo
from tfcompress.export import MODES


@pytest.mark.slow
def test_demo_writes_files_reports_and_plot(tmp_path):
    report = run_demo(tmp_path, epochs=1, log=lambda _: None, fine_tune_epochs=1)
    names = {row["name"] for row in report["rows"]}
    assert {f"digits_{mode}" for mode in MODES} <= names
    makers = {"qat_int8", "qat_4bit_lsq_int8", "pruned_80_int8", "distilled_student_int8",
              "clustered16_int8", "factorized50_int8"}  # fmt: skip
    assert {f"digits_{name}" for name in makers} <= names  # every row maker's rows
    for row in report["rows"]:
        assert (tmp_path / f"{row['name']}.tflite").stat().st_size == row["bytes"]
        assert 0.0 <= row["accuracy"] <= 1.0 and row["gzip_bytes"] < row["bytes"]
    assert json.loads((tmp_path / "report.json").read_text())["rows"] == report["rows"]
    assert "| digits_int8 | int8 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    int8 = next(row for row in report["rows"] if row["mode"] == "int8")
    assert int8["float_ops"] == 0


def test_demo_plot_labels_do_not_overlap_each_other_or_the_points():
    """The demo's crowded cluster (int8, dynamic, int16x8, edgetpu within 1% of each other)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfcompress.demo import plot_accuracy_vs_size

    names = ["int8", "dynamic", "int16x8", "edgetpu", "qat_int8", "pruned_80_int8",
             "clustered16_int8", "qat_4bit_lsq_int8", "factorized50_int8", "float16", "float32"]  # fmt: skip
    sizes = [
        61_000,
        62_000,
        61_500,
        60_800,
        60_500,
        24_000,
        35_500,
        35_000,
        59_000,
        110_000,
        225_000,
    ]
    accuracies = [0.911, 0.907, 0.911, 0.911, 0.978, 0.984, 0.960, 0.964, 0.944, 0.907, 0.904]
    figure = plot_accuracy_vs_size(list(zip(names, sizes, accuracies, strict=True)), 0.904, "demo")
    axis = figure.axes[0]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    labels = {text.get_text(): text.get_window_extent(renderer) for text in axis.texts}
    assert sorted(labels) == sorted(names)
    boxes = list(labels.values())
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1 :]), list(labels)[i]
        assert axis.get_window_extent(renderer).contains(box.x0, box.y0)
    points = axis.transData.transform(
        [(s / 1024, a * 100) for s, a in zip(sizes, accuracies, strict=True)]
    )
    for box in boxes:
        assert not any(box.contains(x, y) for x, y in points)  # no label hides a point
    plt.close(figure)
