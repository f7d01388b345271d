"""One result convention: a compressed model and the report of what was done to it."""

from __future__ import annotations

from typing import Any, NamedTuple


class Compressed(NamedTuple):
    """A model and its report, by name (`result.model`, `result.report`) or unpacked.

    Example:
        >>> result = Compressed(model="m", report="r")
        >>> model, report = result
        >>> (result.model, report)
        ('m', 'r')
    """

    model: Any
    report: Any
