"""Empirical bias correction: give each quantized layer the output mean of the float layer.

Rounding a kernel to its grid shifts the mean of the layer's outputs (`E[(W_q - W) x]` is rarely
zero, and per-tensor grids make it large), and the shift adds up through the network. Layer by
layer, in graph order, the mean pre-activation of the weight-quantized model (whose earlier layers
are already corrected) is compared with the float model's on calibration data, and the difference
is subtracted from the bias. Both means are exact: a kernel op is linear, so the mean over the
batch of its outputs is the op applied to the mean input map.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfcompress.core.catalog import is_depthwise
from tfcompress.core.graph import call_count, check_model, clone_with_weights, consumers
from tfcompress.recovery.weights import (
    as_batches,
    check_layer_bits,
    kernel_layers,
    linear,
    quantize_kernel,
    with_biases,
)


def _mean_inputs(
    model: keras.Model, names: list[str], data: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """The batch mean of the input map of each layer in `names` (one forward pass for all)."""
    sub = keras.Model(model.inputs[0], [model.get_layer(name).input for name in names])
    totals: list[Any] = [None] * len(names)
    for start in range(0, len(data), batch_size):
        outs = sub(data[start : start + batch_size], training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        for i, out in enumerate(outs):
            part = keras.ops.convert_to_numpy(out).sum(axis=0, dtype=np.float64)
            totals[i] = part if totals[i] is None else totals[i] + part
    return {
        name: (total / len(data)).astype(np.float32)[None]
        for name, total in zip(names, totals, strict=True)
    }


def _pre_activation_mean(layer: Any, mean_input: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    out = keras.ops.convert_to_numpy(linear(layer, mean_input, kernel))
    return out.reshape(-1, out.shape[-1]).mean(axis=0)


def bias_correction(
    model: keras.Model,
    data: Any,
    *,
    bits: int = 8,
    per_channel: bool = True,
    num_samples: int = 256,
    batch_size: int = 64,
    reference: keras.Model | None = None,
    layer_bits: dict[str, int] | None = None,
) -> keras.Model:
    """Correct every kernel layer's bias for the mean shift its weight quantization causes.

    Args:
        model: a functional or Sequential Keras model (fold BatchNorm first for the best effect:
            `fold_batch_norms`, or `convert(..., optimize=["fold_bn", "bias_correction"])`).
        data: calibration inputs (numpy array, batch first), e.g. `x_train[:200]`.
        bits: weight width of the file, 8 or 4.
        per_channel: the weight grid of the file: one scale per output channel, or per tensor
            (`convert(..., per_channel=False)`).
        num_samples: how many samples of `data` to use.
        batch_size: samples per forward pass.
        reference: the float model whose output means to match, when `model`'s kernels are
            already rounded (after `adaround`: pass the model before it); same layer names.
            Default: `model` itself.
        layer_bits: `{layer name: 4 or 8}` for layers whose width differs from `bits`.

    Returns:
        A float model with the same kernels and corrected biases (layers without a bias get one).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((6, 6, 2))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Conv2D(3, 1, use_bias=False)(x))
        >>> x = np.random.rand(16, 6, 6, 2).astype("float32")
        >>> corrected = bias_correction(model, x, bits=4)
        >>> [w.shape for w in corrected.layers[-1].get_weights()]
        [(1, 1, 4, 3), (3,)]
    """
    check_model(model, "bias_correction")
    widths = check_layer_bits(model, layer_bits, bits, "bias_correction")
    data = as_batches(data, "bias_correction", model, num_samples)
    result = with_biases(model)
    # the float model whose means the quantized one must match (before the loop changes biases)
    reference = clone_with_weights(result) if reference is None else with_biases(reference)
    layers, _ = kernel_layers(result)
    quantized = clone_with_weights(result)
    for layer in layers:
        kernel = layer.get_weights()[0]
        quantized.get_layer(layer.name).set_weights(
            [
                quantize_kernel(layer, kernel, widths[layer.name], per_channel),
                layer.get_weights()[1],
            ]
        )
    float_inputs = _mean_inputs(reference, [layer.name for layer in layers], data, batch_size)
    for layer in layers:  # in graph order: each layer sees the corrected layers before it
        kernel = layer.get_weights()[0]
        float_kernel, bias = reference.get_layer(layer.name).get_weights()
        q_layer = quantized.get_layer(layer.name)
        q_kernel = q_layer.get_weights()[0]
        float_mean = _pre_activation_mean(layer, float_inputs[layer.name], float_kernel)
        quant_input = _mean_inputs(quantized, [layer.name], data, batch_size)[layer.name]
        quant_mean = _pre_activation_mean(layer, quant_input, q_kernel)
        corrected = (bias - (quant_mean - float_mean)).astype(np.float32)
        layer.set_weights([kernel, corrected])
        q_layer.set_weights([q_kernel, corrected])
    _pass_depthwise_biases_on(result, widths, per_channel)
    return result


def _pass_depthwise_biases_on(
    model: keras.Model, widths: dict[str, int], per_channel: bool
) -> None:
    """Move the bias of each depthwise convolution read only by a 1x1 convolution into that one.

    The two halves of a separable convolution have nothing between them, and a 1x1 convolution
    adds `W^T b` to every pixel for an input shifted by `b`, so `pointwise(y + b)` is exactly
    `pointwise(y) + W^T b`, computed here with the pointwise kernel on its grid (what the file
    multiplies). The depthwise bias becomes zero: the file stores its biases as one shared zero
    vector instead of a corrected vector each (4 bytes a channel in int8, 8 in int16x8).
    """
    outputs = {id(tensor) for tensor in model.outputs}
    for layer in model.layers:
        if not is_depthwise(layer) or not layer.use_bias or call_count(layer) != 1:
            continue
        readers = consumers(layer, unique=False)
        if len(readers) != 1 or id(layer.output) in outputs:
            continue
        pointwise = readers[0]
        if not _is_pointwise(pointwise) or layer.get_config()["activation"] != "linear":
            continue
        depthwise_kernel, shift = layer.get_weights()
        kernel, bias = pointwise.get_weights()
        grid = quantize_kernel(pointwise, kernel, widths[pointwise.name], per_channel)
        moved = shift.astype(np.float64) @ grid.reshape(-1, grid.shape[-1]).astype(np.float64)
        pointwise.set_weights([kernel, (bias + moved).astype(np.float32)])
        layer.set_weights([depthwise_kernel, np.zeros_like(shift)])


def _is_pointwise(layer: Any) -> bool:
    """A plain 1x1 convolution with a bias, called once (strides do not matter at 1x1)."""
    return (
        type(layer) in (keras.layers.Conv1D, keras.layers.Conv2D)
        and all(size == 1 for size in layer.kernel_size)
        and layer.groups == 1
        and layer.use_bias
        and call_count(layer) == 1
    )
