"""One compress run (prune 50% + QAT + int8 on the trained digits CNN) shared by the tests here."""

from __future__ import annotations

import pytest

from tfcompress.recipe import compress

RECIPE = {
    "steps": [
        {"prune": {"final_sparsity": 0.5, "epochs": 2}},
        {"qat": {"epochs": 1}},
        {"convert": {"mode": "int8"}},
    ]
}


@pytest.fixture(scope="package")
def compressed(tmp_path_factory, digits, trained_digits_cnn):
    """(CompressResult, output folder, progress lines) of RECIPE."""
    out = tmp_path_factory.mktemp("compress") / "out"
    data = {
        "x": digits.x_train,
        "y": digits.y_train,
        "x_test": digits.x_test,
        "y_test": digits.y_test,
    }
    lines: list[str] = []
    result = compress(trained_digits_cnn, data, RECIPE, out, log=lines.append)
    return result, out, lines
