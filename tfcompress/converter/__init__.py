"""The conversion namespace of earlier releases: `tfcompress.converter.<name>` keeps working.

`convert`, `save_tflite` and `MODES` live in `tfcompress.export`; everything that works on the
bytes lives in `tfcompress.tflite`. Nothing inside tfcompress imports this module.

Example:
    >>> from tfcompress.converter import convert, inspect
    >>> convert.__module__, inspect.__module__
    ('tfcompress.export', 'tfcompress.tflite.flatbuffer')
"""

from tfcompress.export import MODES, convert, save_tflite
from tfcompress.tflite.edgetpu import EdgeTPUReport, edgetpu_report
from tfcompress.tflite.errors import ConversionError, TFLiteFileError
from tfcompress.tflite.fidelity import ConvertedFile, Fidelity, FidelityThresholds, OutputFidelity
from tfcompress.tflite.flatbuffer import SubgraphReport, TFLiteReport, inspect
from tfcompress.tflite.runtime import Latency, benchmark_tflite, evaluate_tflite, run_tflite

__all__ = [
    "MODES",
    "ConversionError",
    "ConvertedFile",
    "EdgeTPUReport",
    "Fidelity",
    "FidelityThresholds",
    "Latency",
    "OutputFidelity",
    "SubgraphReport",
    "TFLiteFileError",
    "TFLiteReport",
    "benchmark_tflite",
    "convert",
    "edgetpu_report",
    "evaluate_tflite",
    "inspect",
    "run_tflite",
    "save_tflite",
]
