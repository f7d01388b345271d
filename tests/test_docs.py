"""The examples in the docstrings run as written (the README's and the guides': test_docs_examples.py);
the documentation's code blocks parse, the README stays short, and the results pages match the benchmarks' JSON."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tfcompress

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(tfcompress.__path__, "tfcompress."):
        if info.name.split(".")[-1].startswith("_"):
            continue
        names.append(info.name)
    return sorted(names)


@pytest.mark.slow
@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


README_MAX_LINES = 250
GUIDES = sorted((ROOT / "docs" / "guide").glob("*.md"))


def _python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, code) of every fenced python block of a markdown file."""
    text = path.read_text()
    blocks = []
    for match in re.finditer(r"^([ \t]*)```python[^\n]*\n(.*?)^\1```", text, re.S | re.M):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, textwrap.dedent(match.group(2))))
    return blocks


def test_readme_has_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move details to docs/"
    )


@pytest.mark.parametrize(
    "path", [ROOT / "README.md", *GUIDES], ids=lambda p: str(p.relative_to(ROOT))
)
def test_readme_and_guide_python_blocks_parse(path):
    blocks = _python_blocks(path)
    if path.name == "README.md":
        assert len(blocks) >= 5, "README.md: one python block per capability"
    for line, code in blocks:
        try:
            compile(code, f"{path.relative_to(ROOT)}:{line}", "exec")
        except SyntaxError as error:
            pytest.fail(f"{path.relative_to(ROOT)}, block at line {line}: {error}")


def test_results_pages_match_the_json():
    script = ROOT / "benchmarks" / "make_results_pages.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, f"run: python benchmarks/make_results_pages.py\n{done.stdout}"
