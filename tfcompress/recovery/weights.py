"""Weight grids and linear ops shared by the recovery steps: what TFLite's int8 converter does to a kernel.

TFLite quantizes weights symmetrically (zero point 0, levels in [-qmax, qmax], qmax = 127 for
8 bits and 7 for 4 bits) with one scale per output channel (`per_channel=True`) or one per tensor.
`weight_scale` and `quantize_kernel` emulate that grid in float, so a step can measure or correct
the error the file will have before the file exists.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog
from tfcompress.core.graph import fresh_copy, rebuild

L = keras.layers
#: layers whose kernel the recovery steps quantize, correct and round
KERNEL_LAYERS = catalog.classes(lambda row: row.recovery == "kernel")
#: layers the steps split into a depthwise and a 1x1 pointwise convolution first
SEPARABLE_LAYERS = catalog.classes(lambda row: row.recovery == "separable")
#: layers a positive per-channel scale passes through (equalization pairs across them)
SCALE_LAYERS = catalog.classes(lambda row: row.recovery == "scales")


def check_bits(bits: int, what: str) -> int:
    """`bits` if it is 4 or 8, else a ValueError naming `what`.

    Example:
        >>> check_bits(4, "adaround")
        4
    """
    if bits not in (4, 8):
        raise ValueError(
            f"{what}: bits must be 8 or 4 (the weight widths TFLite runs); got {bits!r}."
        )
    return bits


def check_layer_bits(model: keras.Model, layer_bits: Any, bits: int, what: str) -> dict[str, int]:
    """`{kernel layer name: bits}` for every kernel layer: `layer_bits` where named, else `bits`.

    Args:
        model: the model whose kernel layers are meant.
        layer_bits: `{layer name: 4 or 8}` overriding `bits` for those layers, or None.
        bits: the width of the layers not named.
        what: the step's name, for the error messages.

    Raises:
        ValueError: a name that is not a kernel layer of `model` (the message lists them), or a
            width other than 4 or 8.

    Example:
        >>> inputs = keras.Input((4,))
        >>> x = keras.layers.Dense(3, name="a")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="b")(x))
        >>> check_layer_bits(model, {"b": 4}, 8, "adaround")
        {'a': 8, 'b': 4}
    """
    check_bits(bits, what)
    layers, skipped = kernel_layers(model)
    names = [layer.name for layer in layers]
    chosen = dict(layer_bits or {})
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        why = "; ".join(f"{name}: {skipped[name]}" for name in unknown if name in skipped)
        raise ValueError(
            f"{what}: layer_bits names {unknown}, which are not kernel layers of "
            f"'{model.name}'" + (f" ({why})" if why else "") + f". Its kernel layers: {names}."
        )
    for name, width in chosen.items():
        check_bits(width, f"{what} (layer_bits[{name!r}])")
    return {name: int(chosen.get(name, bits)) for name in names}


def qmax(bits: int) -> int:
    """The largest symmetric level: 127 for 8 bits, 7 for 4 bits.

    Example:
        >>> qmax(8), qmax(4)
        (127, 7)
    """
    return 2 ** (bits - 1) - 1


def why_not_quantizable(layer: Any) -> str:
    """Empty when the recovery steps handle `layer`'s kernel; otherwise the reason they skip it.

    Example:
        >>> why_not_quantizable(keras.layers.ReLU())
        'not a Dense/Conv/DepthwiseConv layer'
    """
    if not isinstance(layer, KERNEL_LAYERS) or not getattr(layer, "built", False):
        row = catalog.info(layer)
        if row is not None and row.quantize == catalog.FLOAT:
            return f"stays float in the file ({row.float_reason})"
        return "not a Dense/Conv/DepthwiseConv layer"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first data format"
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution"
    if getattr(layer, "padding", "valid") == "causal":
        return "causal padding"
    return ""


def channel_axes(layer: Any, kernel: np.ndarray) -> tuple[int, ...]:
    """Axes of `kernel` to reduce for one value per output channel (the per-channel scale axes).

    Example:
        >>> channel_axes(keras.layers.DepthwiseConv2D(3), np.zeros((3, 3, 8, 1)))
        (0, 1)
    """
    if catalog.is_depthwise(layer):  # (..., in, multiplier): every (in, m) is a channel
        return tuple(range(kernel.ndim - 2))
    return tuple(range(kernel.ndim - 1))  # (..., out)


def weight_scale(layer: Any, kernel: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """TFLite's symmetric scale of `kernel` (broadcastable to it): max |w| over qmax.

    Example:
        >>> layer = keras.layers.Dense(2)
        >>> weight_scale(layer, np.array([[1.27, -2.54]]), bits=8, per_channel=True).tolist()
        [[0.009999999776482582, 0.019999999552965164]]
    """
    axes = channel_axes(layer, kernel) if per_channel else tuple(range(kernel.ndim))
    peak = np.max(np.abs(kernel), axis=axes, keepdims=True)
    return np.where(peak > 0, peak / qmax(bits), 1.0).astype(np.float32)


def quantize_kernel(layer: Any, kernel: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """`kernel` rounded to the nearest level of its TFLite grid, in float.

    Example:
        >>> layer = keras.layers.Dense(2)
        >>> layer.build((None, 3))
        >>> kernel = np.array([[0.5, 1.0], [0.25, -2.0], [0.1, 0.3]], "float32")
        >>> levels = quantize_kernel(layer, kernel, bits=4, per_channel=True) / (0.5 / 7)
        >>> np.round(levels[:, 0], 4).tolist()
        [7.0, 3.0, 1.0]
    """
    scale = weight_scale(layer, kernel, bits, per_channel)
    limit = qmax(bits)
    return (np.clip(np.round(kernel / scale), -limit, limit) * scale).astype(np.float32)


def linear(layer: Any, inputs: Any, kernel: Any) -> Any:
    """`layer`'s kernel op (no bias, no activation) applied to `inputs` with `kernel` (keras.ops).

    Example:
        >>> layer = keras.layers.Conv2D(2, 3, use_bias=False)
        >>> x = np.random.rand(1, 5, 5, 1).astype("float32")
        >>> y = layer(x)
        >>> bool(np.allclose(linear(layer, x, layer.kernel), y))
        True
    """
    ops = keras.ops
    if isinstance(layer, L.Dense):
        return ops.matmul(inputs, kernel)
    common = {
        "strides": layer.strides,
        "padding": layer.padding,
        "data_format": "channels_last",
        "dilation_rate": layer.dilation_rate,
    }
    if catalog.is_depthwise(layer):
        return ops.depthwise_conv(inputs, kernel, **common)
    return ops.conv(inputs, kernel, **common)


def channel_mean(outputs: Any) -> np.ndarray:
    """Mean of a layer output over every axis but the last (channel) one.

    Example:
        >>> channel_mean(np.arange(6.0).reshape(1, 3, 2)).tolist()
        [2.0, 3.0]
    """
    array = keras.ops.convert_to_numpy(outputs)
    return array.reshape(-1, array.shape[-1]).mean(axis=0)


def kernel_layers(model: keras.Model) -> tuple[list[Any], dict[str, str]]:
    """The layers the steps handle, in graph order, and `{name: why skipped}` for the others.

    Example:
        >>> inputs = keras.Input((4, 4, 2))
        >>> x = keras.layers.Conv2D(4, 1, groups=2, name="grouped")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1, name="head")(x))
        >>> handled, skipped = kernel_layers(model)
        >>> [layer.name for layer in handled], skipped
        (['head'], {'grouped': 'grouped convolution'})
    """
    handled, skipped = [], {}
    for layer in model.layers:
        if not isinstance(layer, KERNEL_LAYERS):
            continue
        reason = why_not_quantizable(layer)
        if reason:
            skipped[layer.name] = reason
        else:
            handled.append(layer)
    return handled, skipped


def unhandled_layers(model: keras.Model) -> dict[str, str]:
    """`{name: why}` for every layer with weights whose kernel the recovery steps leave alone.

    Separable convolutions are not in it (the steps split them first); layers without weights
    (activations, pooling) are not either.

    Example:
        >>> inputs = keras.Input((4, 4, 2))
        >>> x = keras.layers.Conv2DTranspose(2, 3, name="up")(inputs)
        >>> unhandled_layers(keras.Model(inputs, keras.layers.Dense(1)(x)))
        {'up': 'Conv2DTranspose: not a Dense/Conv/DepthwiseConv layer'}
    """
    found = {}
    for layer in model.layers:
        if isinstance(layer, SEPARABLE_LAYERS) or isinstance(layer, keras.Model):
            continue
        if not layer.weights or (catalog.info(layer) and not catalog.info(layer).kernels):
            continue  # no kernel: BatchNormalization, PReLU, Normalization...
        reason = why_not_quantizable(layer)
        if reason:
            found[layer.name] = f"{type(layer).__name__}: {reason}"
    return found


def split_separable(model: keras.Model) -> keras.Model:
    """`model` with each separable convolution as its depthwise and its 1x1 pointwise convolution.

    TFLite runs a SeparableConv1D/2D as exactly these two ops (DEPTHWISE_CONV_2D, CONV_2D), so
    the function and the file are the same; the recovery steps then handle both kernels. The
    parts are named `<name>_depthwise` and `<name>_pointwise`. A model without separable
    convolutions is returned as it is.

    Example:
        >>> inputs = keras.Input((6, 6, 3))
        >>> model = keras.Model(inputs, keras.layers.SeparableConv2D(4, 3, name="sep")(inputs))
        >>> split = split_separable(model)
        >>> [layer.name for layer in split.layers[1:]]
        ['sep_depthwise', 'sep_pointwise']
        >>> x = np.random.rand(2, 6, 6, 3).astype("float32")
        >>> bool(np.allclose(split(x), model(x), atol=1e-5))
        True
    """
    if not any(isinstance(layer, SEPARABLE_LAYERS) for layer in model.layers):
        return model
    if isinstance(model, keras.Sequential):  # clone_model's call_function needs a graph
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    parts: dict[int, tuple[Any, Any]] = {}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer if isinstance(layer, SEPARABLE_LAYERS) else fresh_copy(layer)

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(layer, SEPARABLE_LAYERS):
            return layer(*args, **kwargs)
        if id(layer) not in parts:
            parts[id(layer)] = _separable_parts(layer, tuple(args[0].shape))
        depthwise, pointwise = parts[id(layer)]
        return pointwise(depthwise(args[0]))

    return keras.models.clone_model(model, clone_function=clone, call_function=call)


def _separable_parts(layer: Any, input_shape: tuple) -> tuple[Any, Any]:
    """The DepthwiseConv and the 1x1 Conv that compute `layer`, with its weights."""
    one_d = isinstance(layer, L.SeparableConv1D)
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        raise ValueError(
            f"recovery: separable convolution '{layer.name}' is channels_first; the steps handle "
            "channels_last models (TFLite's layout)."
        )
    depthwise = (L.DepthwiseConv1D if one_d else L.DepthwiseConv2D)(
        config["kernel_size"],
        strides=config["strides"],
        padding=config["padding"],
        depth_multiplier=config["depth_multiplier"],
        dilation_rate=config["dilation_rate"],
        use_bias=False,
        name=f"{layer.name}_depthwise",
    )
    pointwise = (L.Conv1D if one_d else L.Conv2D)(
        config["filters"],
        1,
        activation=config["activation"],
        use_bias=config["use_bias"],
        name=f"{layer.name}_pointwise",
    )
    depthwise.build(input_shape)
    depthwise.set_weights([keras.ops.convert_to_numpy(layer.depthwise_kernel)])
    pointwise.build(depthwise.compute_output_shape(input_shape))
    pointwise.set_weights(
        [
            keras.ops.convert_to_numpy(w)
            for w in (layer.pointwise_kernel, layer.bias)
            if w is not None
        ]
    )
    return depthwise, pointwise


def with_biases(model: keras.Model, names: set[str] | None = None) -> keras.Model:
    """A copy of `model` whose kernel layers (those in `names`, or all) have a (zero) bias.

    Bias correction and high-bias absorption write to biases; TFLite adds a zero bias anyway,
    so the file costs the same.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
        >>> with_biases(model).layers[-1].use_bias
        True
    """

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if (
            not isinstance(layer, KERNEL_LAYERS)
            or layer.use_bias
            or (names is not None and layer.name not in names)
        ):
            return None
        copy = layer.__class__.from_config({**layer.get_config(), "use_bias": True})
        copy.build(tuple(layer.input.shape))
        kernel = layer.get_weights()[0]
        width = copy.get_weights()[1].shape
        copy.set_weights([kernel, np.zeros(width, np.float32)])
        return copy

    return rebuild(model, replace)


def as_batches(data: Any, what: str, model: keras.Model, limit: int | None = None) -> np.ndarray:
    """Calibration inputs as one float32 array (a single-input model), checked against the model.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> as_batches(np.ones((10, 3)), "adaround", model, limit=4).shape
        (4, 3)
    """
    if isinstance(data, list | tuple) and len(data) == 1:
        data = data[0]
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{what}: data must be a numpy array of model inputs (batch first); got "
            f"{type(data).__name__}. Pass e.g. x_train[:200]."
        ) from error
    if len(model.inputs) != 1:
        raise ValueError(
            f"{what}: only single-input models are supported; '{model.name}' has "
            f"{len(model.inputs)} inputs."
        )
    expected = tuple(model.inputs[0].shape[1:])
    if array.ndim != len(expected) + 1 or any(
        e is not None and e != a for e, a in zip(expected, array.shape[1:], strict=True)
    ):
        raise ValueError(
            f"{what}: data of shape {array.shape} does not match the input of '{model.name}' "
            f"(None, {', '.join(str(e) for e in expected)}); pass a batch of model inputs."
        )
    if not len(array):
        raise ValueError(f"{what}: data is empty; pass a few hundred real input samples.")
    return array if limit is None else array[:limit]


def predict(model: keras.Model, data: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """`model`'s output on `data` as numpy, batch by batch, in inference mode.

    Example:
        >>> inputs = keras.Input((3,))
        >>> predict(keras.Model(inputs, inputs * 2.0), np.ones((5, 3)), batch_size=2).shape
        (5, 3)
    """
    parts = [
        keras.ops.convert_to_numpy(model(data[i : i + batch_size], training=False))
        for i in range(0, len(data), batch_size)
    ]
    return np.concatenate(parts)
