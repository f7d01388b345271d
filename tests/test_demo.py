"""The main job writes every .tflite file, the JSON and Markdown reports and the plot."""

from __future__ import annotations

import json

import pytest

from tfcompress.converter.convert import MODES
from tfcompress.demo import run_demo


@pytest.mark.slow
def test_demo_writes_files_reports_and_plot(tmp_path):
    report = run_demo(tmp_path, epochs=2, log=lambda _: None)
    names = {row["name"] for row in report["rows"]}
    assert {f"digits_{mode}" for mode in MODES} <= names
    for row in report["rows"]:
        assert (tmp_path / f"{row['name']}.tflite").stat().st_size == row["bytes"]
        assert 0.0 <= row["accuracy"] <= 1.0 and row["gzip_bytes"] < row["bytes"]
    assert json.loads((tmp_path / "report.json").read_text())["rows"] == report["rows"]
    assert "| digits_int8 | int8 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    int8 = next(row for row in report["rows"] if row["mode"] == "int8")
    assert int8["float_ops"] == 0
