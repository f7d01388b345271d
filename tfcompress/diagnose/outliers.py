"""Make one layer of a trained model sensitive to int8 quantization without changing its function.

`inject_weight_outlier` rescales one channel between a layer and its producer: the producer's
output channel is divided by `factor` and the layer's weights that read it are multiplied by
`factor`. Through ReLU, pooling and averaging (positively homogeneous) the float function is
unchanged, but the layer now has one row of weights `factor` times larger than the rest, so its
per-output-channel int8 scales are set by that row and every other weight is rounded coarsely.
It is the failure that the debugger must find (and that cross-layer equalization undoes): used
by the tests and `benchmarks/debug_bench.py`.

`inject_activation_outlier` is its mirror: the producer's output channel is multiplied by
`factor` and the layer's weights that read it divided by it, so the tensor between them has one
channel `factor` times wider than the rest and its int8 steps, sized for that channel, round the
others away: the failure 16-bit activations (`convert(..., int16_layers=[...])`) repair.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfcompress.core.graph import sole_producer

# layers through which a positive per-channel scale passes unchanged: f(s * x) = s * f(x)
_HOMOGENEOUS = {
    "ReLU",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Dropout",
}
_SCALABLE = {"Dense", "Conv1D", "Conv2D", "BatchNormalization"}


def _check_homogeneous(layer: Any) -> None:
    name = type(layer).__name__
    if name == "ReLU" and (layer.max_value is not None or layer.negative_slope or layer.threshold):
        raise ValueError(f"'{layer.name}' is a clipped or leaky ReLU: a channel scale changes it.")
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if name in ("Dense", "Conv1D", "Conv2D") and activation not in ("relu", "linear"):
        raise ValueError(
            f"'{layer.name}' has activation {activation!r}: only relu or linear keep a scale."
        )


def inject_weight_outlier(model: Any, layer: str, factor: float = 30.0, channel: int = 0) -> Any:
    """Return a copy of `model` with one input channel of `layer` scaled by `factor`.

    Args:
        model: a built Keras 3 functional model.
        layer: a Dense/Conv1D/Conv2D layer whose input comes, through ReLU or pooling layers,
            from a Dense/Conv/BatchNormalization layer (the producer).
        factor: how much larger the outlier row of weights is (> 1).
        channel: which input channel of `layer` carries the outlier.

    Returns:
        A new model whose float outputs equal the original's (to rounding).

    Raises:
        ValueError: `layer` or its producer chain cannot carry a scale; the message says why.

    Example:
        >>> import numpy as np
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.diagnose.outliers import inject_weight_outlier
        >>> model = build_digits_cnn()
        >>> x = np.random.default_rng(0).random((4, 8, 8, 1), np.float32)
        >>> sensitive = inject_weight_outlier(model, "logits", factor=30.0)
        >>> bool(np.allclose(model(x), sensitive(x), atol=1e-4))
        True
    """
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor!r}.")
    return _rescale_channel(model, layer, factor, channel)


def inject_activation_outlier(
    model: Any, layer: str, factor: float = 100.0, channel: int = 0
) -> Any:
    """Return a copy of `model` whose input channel `channel` of `layer` is `factor` times wider.

    The producer's output channel is multiplied by `factor` and the weights of `layer` that read
    it are divided by it: the float outputs do not change, the tensor between them has one
    channel `factor` times wider than the others.

    Args:
        model: a built Keras 3 functional model.
        layer: a Dense/Conv1D/Conv2D layer whose input comes, through ReLU or pooling layers,
            from a Dense/Conv/BatchNormalization layer (the producer).
        factor: how much wider the outlier channel is (> 1).
        channel: which input channel of `layer` is widened.

    Returns:
        A new model whose float outputs equal the original's (to rounding).

    Example:
        >>> import numpy as np
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.diagnose.outliers import inject_activation_outlier
        >>> model = build_digits_cnn()
        >>> x = np.random.default_rng(0).random((4, 8, 8, 1), np.float32)
        >>> wide = inject_activation_outlier(model, "logits", factor=30.0)
        >>> bool(np.allclose(model(x), wide(x), atol=1e-4))
        True
    """
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor!r}.")
    return _rescale_channel(model, layer, 1.0 / factor, channel)


def _rescale_channel(model: Any, layer: str, factor: float, channel: int) -> Any:
    """A copy of `model` with input channel `channel` of `layer` times `factor`, its producer's
    output channel divided by it."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    target = copy.get_layer(layer)
    if type(target).__name__ not in ("Dense", "Conv1D", "Conv2D"):
        raise ValueError(f"'{layer}' is a {type(target).__name__}; give a Dense or Conv layer.")
    producer = sole_producer(target)
    while producer is not None and type(producer).__name__ in _HOMOGENEOUS:
        _check_homogeneous(producer)
        producer = sole_producer(producer)
    if producer is None or type(producer).__name__ not in _SCALABLE:
        raise ValueError(
            f"The input of '{layer}' does not come (through ReLU/pooling) from a Dense, Conv or "
            "BatchNormalization layer, so no channel of it can be rescaled."
        )
    _check_homogeneous(producer)
    kernel = target.kernel.numpy()
    if not 0 <= channel < kernel.shape[-2]:
        raise ValueError(f"channel must be in [0, {kernel.shape[-2]}), got {channel}.")
    kernel[..., channel, :] *= factor
    target.kernel.assign(kernel)
    _scale_output_channel(producer, channel, 1.0 / factor)
    return copy


def _scale_output_channel(layer: Any, channel: int, scale: float) -> None:
    if type(layer).__name__ == "BatchNormalization":
        if layer.gamma is None:
            raise ValueError(f"'{layer.name}' has no gamma (scale=False): it cannot carry a scale.")
        for variable in (layer.gamma, layer.beta):
            if variable is not None:
                values = variable.numpy()
                values[channel] *= scale
                variable.assign(values)
        return
    kernel = layer.kernel.numpy()
    kernel[..., channel] *= scale
    layer.kernel.assign(kernel)
    if layer.bias is not None:
        bias = layer.bias.numpy()
        bias[channel] *= scale
        layer.bias.assign(bias)


def quietest_channel(model: Any, layer: str, x: np.ndarray) -> int:
    """The input channel of `layer` with the smallest mean absolute value on `x`.

    An outlier row of weights on the quietest channel (often a ReLU unit that is mostly zero)
    leaves the producer's int8 output almost exact, so the error is the layer's own.

    Example:
        >>> import numpy as np
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.diagnose.outliers import quietest_channel
        >>> x = np.random.default_rng(0).random((4, 8, 8, 1), np.float32)
        >>> 0 <= quietest_channel(build_digits_cnn(), "logits", x) < 64
        True
    """
    import keras

    target = model.get_layer(layer)
    probe = keras.Model(model.inputs, target.input)
    values = np.asarray(probe.predict(x, verbose=0))
    return int(np.argmin(np.mean(np.abs(values.reshape(-1, values.shape[-1])), axis=0)))
