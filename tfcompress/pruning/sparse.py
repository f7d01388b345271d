"""Sparse TFLite export (`EXPERIMENTAL_SPARSITY`) and an honest check of where it can run."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.export import convert
from tfcompress.pruning.wrapper import PruneLowMagnitude
from tfcompress.tflite.runtime import run_tflite


@dataclasses.dataclass(frozen=True)
class SparseRuntimeReport:
    """Where a sparse flatbuffer runs on this LiteRT build.

    Attributes:
        delegate: "xnnpack" when the default XNNPACK delegate accepts the file, else "builtin"
            (run it with `builtin_only=True`; DENSIFY ops expand the weights at load time).
        xnnpack_error: why XNNPACK refused the file, or None.
    """

    delegate: str
    xnnpack_error: str | None

    @property
    def builtin_only(self) -> bool:
        return self.delegate == "builtin"


def convert_sparse(
    model: keras.Model, mode: str = "int8", representative_data: Any = None, **kwargs: Any
) -> bytes:
    """Convert a stripped pruned model with sparse weight encoding (`EXPERIMENTAL_SPARSITY`).

    Sparse tensors are stored compressed (CSR-like) and preceded by DENSIFY ops. In
    ai-edge-litert 2.3.0 the default XNNPACK delegate refuses sparse int8 FULLY_CONNECTED
    weights; check with `check_sparse_runtime` and run with `builtin_only=True` if needed.

    Args:
        model: a plain Keras model (call `strip_pruning` first).
        mode: any `tfcompress.convert` mode.
        representative_data: calibration inputs for the integer modes.
        **kwargs: passed to `tfcompress.convert`.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> x = load_digits().x_train[:20]
        >>> flatbuffer = convert_sparse(build_digits_cnn(width=4), "int8", x)
        >>> isinstance(flatbuffer, bytes)
        True
    """
    if any(isinstance(layer, PruneLowMagnitude) for layer in model.layers):
        raise ValueError(
            f"convert_sparse: model '{model.name}' still holds pruning wrappers; call "
            "tfcompress.strip_pruning(model) first."
        )
    return convert(model, mode=mode, representative_data=representative_data, sparsity=True,
                   **kwargs)  # fmt: skip


def check_sparse_runtime(flatbuffer: bytes, x: np.ndarray) -> SparseRuntimeReport:
    """Try the flatbuffer on the default XNNPACK delegate; fall back to the builtin kernels.

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> x = load_digits().x_train[:4]
        >>> report = check_sparse_runtime(convert_sparse(build_digits_cnn(width=4), "float32"), x)
        >>> report.delegate in ("xnnpack", "builtin")
        True
    """
    try:
        run_tflite(flatbuffer, x[:1])
        return SparseRuntimeReport("xnnpack", None)
    except Exception as error:  # noqa: BLE001 - any refusal by XNNPACK means: use builtin kernels
        run_tflite(flatbuffer, x[:1], builtin_only=True)  # must work, else the file is broken
        return SparseRuntimeReport("builtin", str(error).split(". The file")[0])
