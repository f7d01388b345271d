"""Conversion to TFLite in every deployment mode, inspection, Edge TPU report, LiteRT measurement.

Names are imported on first use: `inspect`, `edgetpu_report`, `evaluate_tflite`, `run_tflite` and
`benchmark_tflite` need only LiteRT and the flatbuffer schema; `convert` loads TensorFlow.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> module that defines it
_NAMES: dict[str, str] = {
    "MODES": "tfcompress.converter.convert",
    "convert": "tfcompress.converter.convert",
    "save_tflite": "tfcompress.converter.convert",
    "EdgeTPUReport": "tfcompress.converter.edgetpu",
    "edgetpu_report": "tfcompress.converter.edgetpu",
    "ConversionError": "tfcompress.converter.errors",
    "TFLiteFileError": "tfcompress.converter.errors",
    "TFLiteReport": "tfcompress.converter.flatbuffer",
    "SubgraphReport": "tfcompress.converter.flatbuffer",
    "inspect": "tfcompress.converter.flatbuffer",
    "Latency": "tfcompress.converter.runtime",
    "benchmark_tflite": "tfcompress.converter.runtime",
    "evaluate_tflite": "tfcompress.converter.runtime",
    "run_tflite": "tfcompress.converter.runtime",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'tfcompress.converter' has no attribute '{name}'")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])


class _ConverterPackage(types.ModuleType):
    """Keeps `tfcompress.converter.convert` the function once the submodule of that name loads.

    Importing `tfcompress.converter.convert` makes Python set the package attribute `convert` to the
    submodule; this property ignores that and always answers the function.
    """

    @property
    def convert(self) -> Any:
        return importlib.import_module("tfcompress.converter.convert").convert

    @convert.setter
    def convert(self, value: Any) -> None:  # the import system sets the submodule: nothing to keep
        pass


sys.modules[__name__].__class__ = _ConverterPackage
