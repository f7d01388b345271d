"""tfcompress: compression for Keras 3 and TensorFlow.

Quantization-aware training, pruning and distillation for Keras 3 models, and conversion to
TFLite flatbuffers measured on the LiteRT interpreter.

Example:
    >>> import tfcompress as tfc
    >>> from tfcompress.models import build_digits_cnn
    >>> model = build_digits_cnn()
    >>> flatbuffer = tfc.convert(model, mode="float16")
    >>> tfc.inspect(flatbuffer).float_ops != []
    True
"""

from tfcompress import compat as _compat  # noqa: F401  (sets TF log level before TF loads)
from tfcompress import data
from tfcompress.converter import (
    ConversionError,
    EdgeTPUReport,
    TFLiteReport,
    benchmark_tflite,
    convert,
    edgetpu_report,
    evaluate_tflite,
    inspect,
    save_tflite,
)

# -- subpackages register their public names below (one import line each) --
from tfcompress.quantization import quantize_model
from tfcompress.distillation import Distiller
from tfcompress.pruning import prune_low_magnitude, strip_pruning
from tfcompress import sharing
from tfcompress.sharing import cluster_weights, factorize, strip_clustering

__version__ = "0.1.0"

__all__ = [
    "quantize_model",
    "Distiller",
    "prune_low_magnitude",
    "strip_pruning",
    "ConversionError",
    "EdgeTPUReport",
    "TFLiteReport",
    "benchmark_tflite",
    "convert",
    "data",
    "edgetpu_report",
    "evaluate_tflite",
    "inspect",
    "save_tflite",
    "sharing",
    "cluster_weights",
    "factorize",
    "strip_clustering",
]
