"""Every notebook runs top to bottom, as "Run all" runs it in Jupyter.

The code cells of a notebook run in order in one namespace, from a `notebooks/` folder of a
temporary directory (what a notebook writes to `../tflite_models/` lands beside it, not in the
checkout). They run in the test's own Python process: a Jupyter kernel per notebook would import
TensorFlow again for each, about half of the notebooks' time. So a notebook may hold only
Python, never an IPython magic or shell line (`%`, `!`), which this process could not run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _code_cells(path: Path) -> list[str]:
    notebook = json.loads(path.read_text())
    assert notebook.get("nbformat") == 4, f"{path.name}: not an nbformat 4 notebook"
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_every_notebook_is_found():
    assert len(NOTEBOOKS) >= 5, [path.name for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_code_has_no_ipython_magic(path: Path):
    magics = [
        line
        for code in _code_cells(path)
        for line in code.splitlines()
        if line.lstrip().startswith(("%", "!"))
    ]
    assert not magics, f"{path.name}: write plain Python instead of {magics}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (tmp_path / "tflite_models").mkdir()
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__main__"}
    for index, code in enumerate(_code_cells(path), start=1):
        where = f"{path.name}, code cell {index}"
        try:
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - our notebooks
        except Exception as error:  # noqa: BLE001 - name the cell that failed
            pytest.fail(f"{where} failed: {type(error).__name__}: {error}")
    written = sorted(p.name for p in (tmp_path / "tflite_models").iterdir())
    assert all(name.endswith(".tflite") for name in written), written
