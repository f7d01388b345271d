"""Without the `plots` extra the recipe's report is written without its plots and says why."""

from __future__ import annotations

import html

import pytest

from tfcompress.recipe import load_recipe
from tfcompress.recipe.report import NO_PLOTS, write_reports

# the worker that runs test_compress.py runs this module too (pytest-xdist, --dist loadgroup):
# the recipe's `compressed` fixture then runs once
pytestmark = pytest.mark.xdist_group("recipe-compress")


def test_the_report_is_written_without_plots_and_says_how_to_get_them(
    compressed, tmp_path, monkeypatch
):
    monkeypatch.setattr("tfcompress.recipe.report.available", lambda module: False)
    result, out, _ = compressed
    flatbuffer = (out / "model.tflite").read_bytes()
    write_reports(result, load_recipe(out / "recipe.yaml"), flatbuffer, flatbuffer, tmp_path)
    assert NO_PLOTS in (tmp_path / "report.md").read_text()
    assert html.escape(NO_PLOTS) in (tmp_path / "report.html").read_text()
    assert not list(tmp_path.glob("*.png"))
