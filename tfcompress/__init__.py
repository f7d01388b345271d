"""tfcompress: compression for Keras 3 and TensorFlow.

Quantization-aware training, pruning and distillation for Keras 3 models, and conversion to
TFLite flatbuffers measured on the LiteRT interpreter.

The names below are imported on first use, so `import tfcompress` (and the light command-line
tools `inspect`, `bench` and `evaluate`) does not load TensorFlow until a name that needs it is
touched.

Example:
    >>> import tfcompress as tfc
    >>> from tfcompress.models import build_digits_cnn
    >>> model = build_digits_cnn()
    >>> flatbuffer = tfc.convert(model, mode="float16")
    >>> tfc.inspect(flatbuffer).float_ops != []
    True
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads, whenever it does

__version__ = "0.1.0"

# public name -> module that defines it (one line each; subpackages register their names here)
_NAMES: dict[str, str] = {
    "quantize_model": "tfcompress.quantization",
    "Distiller": "tfcompress.distillation",
    "prune_low_magnitude": "tfcompress.pruning",
    "strip_pruning": "tfcompress.pruning",
    "ConversionError": "tfcompress.tflite.errors",
    "TFLiteFileError": "tfcompress.tflite.errors",
    "EdgeTPUReport": "tfcompress.tflite.edgetpu",
    "TFLiteReport": "tfcompress.tflite.flatbuffer",
    "benchmark_tflite": "tfcompress.tflite.runtime",
    "convert": "tfcompress.export",
    "ConvertedFile": "tfcompress.tflite.fidelity",
    "Fidelity": "tfcompress.tflite.fidelity",
    "FidelityThresholds": "tfcompress.tflite.fidelity",
    "edgetpu_report": "tfcompress.tflite.edgetpu",
    "evaluate_tflite": "tfcompress.tflite.runtime",
    "inspect": "tfcompress.tflite.flatbuffer",
    "save_tflite": "tfcompress.tflite.save",
    "SubgraphReport": "tfcompress.tflite.flatbuffer",
    "cluster_weights": "tfcompress.sharing",
    "factorize": "tfcompress.sharing",
    "strip_clustering": "tfcompress.sharing",
    "auto_quantize": "tfcompress.diagnose.auto",
    "debug_quantization": "tfcompress.diagnose.debug",
    "pack_int4": "tfcompress.tflite.int4",
    "load_model": "tfcompress.io",
    "ModelFileError": "tfcompress.io",
}

# subpackages reachable as attributes (`tfc.sparsity.prune_low_magnitude`)
_SUBPACKAGES = (
    "clustering",
    "converter",
    "data",
    "distillation",
    "distribute",
    "experimental",
    "io",
    "layers",
    "micro",
    "models",
    "ptq",
    "pruning",
    "quantization",
    "recipe",
    "sharing",
    "sparsity",
)

__all__ = sorted([*_NAMES, *_SUBPACKAGES])


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"tfcompress.{name}")
    else:
        raise AttributeError(f"module 'tfcompress' has no attribute '{name}'")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES, *_SUBPACKAGES])


# plain keras.saving.load_model finds tfcompress's classes without importing them eagerly
from tfcompress import _lazy_registry  # noqa: E402 - after the names; imports no Keras

_lazy_registry.install()
