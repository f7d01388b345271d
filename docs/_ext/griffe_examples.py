"""Griffe extension for the API reference: a Google-style `Example:` section is an examples section.

tfcompress's docstrings title their doctests `Example:`; Griffe reads only `Examples:` as the
examples section and would render the singular as an admonition of plain text. The docstrings
stay as they are (doctest runs them); this rewrites the title before Griffe parses them.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
