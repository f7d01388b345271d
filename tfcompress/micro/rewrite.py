"""Layers whose TFLite ops TFLM lacks, rewritten as equivalent layers whose ops it has.

`UpSampling2D` with nearest interpolation repeats rows and columns, which the converter writes
as TILE (no TFLM kernel); `Resizing` with nearest interpolation to the same size computes the
same values with RESIZE_NEAREST_NEIGHBOR, which TFLM runs. `tfcompress.convert(...,
target="micro")` applies these rewrites to a copy of the model.
"""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.core.graph import functional_graph, rebuild


def _nearest_resizing(layer: Any) -> keras.layers.Layer | None:
    """`Resizing(nearest)` computing what `layer` (an UpSampling2D) computes, or None."""
    if not isinstance(layer, keras.layers.UpSampling2D) or layer.interpolation != "nearest":
        return None
    if layer.data_format != "channels_last":
        return None
    height, width = layer.input.shape[1:3]
    if height is None or width is None:
        return None
    rows, columns = layer.size
    return keras.layers.Resizing(
        height * rows, width * columns, interpolation="nearest", name=layer.name
    )


def micro_friendly(model: keras.Model) -> keras.Model:
    """A copy of `model` whose layers TFLM lacks ops for are replaced by equivalent ones.

    Returns `model` itself when nothing needs a rewrite (or it has no functional graph).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((2, 2, 1))
        >>> model = keras.Model(inputs, keras.layers.UpSampling2D(2, name="up")(inputs))
        >>> rewritten = micro_friendly(model)
        >>> type(rewritten.get_layer("up")).__name__
        'Resizing'
        >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
        >>> bool(np.array_equal(rewritten.predict(x, verbose=0), model.predict(x, verbose=0)))
        True
    """
    if functional_graph(model) is None:
        return model
    if not any(_nearest_resizing(layer) is not None for layer in model.layers):
        return model
    return rebuild(model, _nearest_resizing)
