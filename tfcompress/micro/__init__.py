"""TensorFlow Lite Micro (TFLM) as a target: check that a file runs there, and export it.

`check` loads a TFLite file on TFLM's own interpreter and kernels (the `tflite-micro` package
runs them on this machine), measures the smallest tensor arena, and compares TFLM's outputs with
LiteRT's reference kernels; `export` writes the C++ files firmware compiles: the model as an
aligned array, the arena size, the input and output quantization, and an op resolver with
exactly the file's ops. `compress` stores a clustered model's weights as look-up tables that
TFLM decodes (4-bit indices for 16 clusters), so the file takes less flash; `decompress` undoes it.

Needs `pip install 'tfcompress[micro]'`. Imports `tfcompress.core` and `tfcompress.tflite` only,
and never TensorFlow.

Example:
    >>> import numpy as np, tfcompress as tfc
    >>> from tfcompress.models import build_digits_cnn
    >>> x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
    >>> report = tfc.micro.check(tfc.convert(build_digits_cnn(width=4), "int8", x))
    >>> report.runs
    True
"""

from __future__ import annotations

from tfcompress.micro.compress import compress, decompress
from tfcompress.micro.errors import MicroError, MicroUnavailableError
from tfcompress.micro.firmware import ExportedFiles, export
from tfcompress.micro.report import FailingOp, MicroReport, OutputDifference, check

__all__ = [
    "ExportedFiles",
    "FailingOp",
    "MicroError",
    "MicroReport",
    "MicroUnavailableError",
    "OutputDifference",
    "check",
    "compress",
    "decompress",
    "export",
]
