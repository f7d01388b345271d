"""Conversion to TFLite in every deployment mode, inspection, Edge TPU report, LiteRT measurement."""

from tfcompress.converter.convert import MODES, convert, save_tflite
from tfcompress.converter.edgetpu import EdgeTPUReport, edgetpu_report
from tfcompress.converter.errors import ConversionError, TFLiteFileError
from tfcompress.converter.flatbuffer import TFLiteReport, inspect
from tfcompress.converter.runtime import Latency, benchmark_tflite, evaluate_tflite, run_tflite

__all__ = [
    "MODES",
    "ConversionError",
    "EdgeTPUReport",
    "Latency",
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
