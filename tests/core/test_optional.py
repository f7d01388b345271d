"""Packages behind an extra: a missing one is named with the extra that installs it."""

from __future__ import annotations

import sys

import pytest

from tfcompress.core.optional import available, require


def test_require_names_the_extra_that_installs_a_missing_package(monkeypatch):
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(
        ImportError, match=r"QuantizationDebugReport.plot needs matplotlib.*\[plots\]"
    ):
        require("matplotlib", "QuantizationDebugReport.plot")
    assert available("numpy") and not available("no_such_module_here")
