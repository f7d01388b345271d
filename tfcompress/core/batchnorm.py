"""BatchNormalization folding: the one place that decides which BatchNorm folds and how.

Two users share it: `fold_batch_norms` rewrites a float model once (clustering, PTQ recovery), and
the QAT wrapper folds its BatchNorm into the kernel at every step (`fold_into_kernel` on tensors).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog
from tfcompress.core.graph import (
    call_count,
    inbound_nodes,
    outbound_nodes,
    rebuild,
)

L = keras.layers
FOLDABLE = catalog.classes(lambda row: row.folds_batchnorm)  # a BatchNorm after them folds in


@keras.saving.register_keras_serializable(package="tfcompress")
class FoldedBatchNormalization(keras.layers.Layer):
    """Stands where a BatchNormalization was folded into the layer before it: passes inputs on."""

    def call(self, inputs, training=None, mask=None):  # noqa: ANN001 - BatchNormalization's signature
        return inputs

    def compute_output_shape(self, input_shape):  # noqa: ANN001
        return input_shape


def is_linear(layer: Any) -> bool:
    """True when `layer` has no activation (or a linear one) after its kernel."""
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


def folds_into(producer: Any, batchnorm: Any, rank: int) -> bool:
    """Whether `batchnorm` (on a rank-`rank` output of `producer`) folds exactly into its kernel.

    Both must be used once, the producer must be a linear kernel layer (`FOLDABLE`) and the
    BatchNorm must normalize the last (channel) axis.
    """
    return (
        isinstance(producer, FOLDABLE)
        and isinstance(batchnorm, L.BatchNormalization)
        and call_count(producer) == 1
        and call_count(batchnorm) == 1
        and is_linear(producer)
        and batchnorm.axis in (-1, [-1], rank - 1, [rank - 1])
    )


def fold_into_kernel(layer: Any, batchnorm: Any, kernel: Any, bias: Any | None) -> tuple[Any, Any]:
    """`layer`'s kernel and bias with `batchnorm`'s moving statistics folded in (keras.ops).

    Works on tensors (the QAT wrapper folds at every step, so gradients reach gamma and beta)
    and on numpy arrays alike.
    """
    ops = keras.ops
    scale = ops.rsqrt(ops.convert_to_tensor(batchnorm.moving_variance) + batchnorm.epsilon)
    if batchnorm.gamma is not None:
        scale = scale * batchnorm.gamma
    mean = ops.convert_to_tensor(batchnorm.moving_mean)
    shift = -mean * scale if bias is None else (bias - mean) * scale
    if batchnorm.beta is not None:
        shift = shift + batchnorm.beta
    return kernel * channel_scale(layer, kernel, scale), shift


def channel_scale(layer: Any, kernel: Any, scale: Any) -> Any:
    """`scale` (one value per output channel) shaped to multiply `layer`'s kernel."""
    if catalog.is_depthwise(layer):
        return keras.ops.reshape(scale, tuple(kernel.shape[-2:]))  # (..., in, multiplier)
    if catalog.is_transposed(layer):
        return keras.ops.reshape(scale, (-1, 1))  # (..., out, in)
    return scale


def batch_norm_pairs(model: keras.Model) -> dict[str, str]:
    """Map each BatchNormalization that directly and solely follows a foldable layer to that layer."""
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, L.BatchNormalization) or call_count(layer) != 1:
            continue
        parents = inbound_nodes(layer)[0].parent_nodes
        if len(parents) != 1:
            continue
        producer = parents[0].operation
        rank = len(producer.output.shape) if isinstance(producer, FOLDABLE) else 0
        if folds_into(producer, layer, rank) and len(outbound_nodes(producer)) == 1:
            pairs[layer.name] = producer.name
    return pairs


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """Fold every BatchNormalization into the Conv/Dense layer before it (numerically exact).

    The BatchNormalization becomes an identity, so the kernels trained or quantized next are the
    ones the TFLite converter deploys (a converter fold after clustering would rescale shared
    values).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4, 4, 1))
        >>> x = keras.layers.Conv2D(2, 3, use_bias=False)(inputs)
        >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
        >>> folded = fold_batch_norms(model)
        >>> x = np.random.rand(2, 4, 4, 1).astype("float32")
        >>> bool(np.allclose(model(x), folded(x), atol=1e-5))
        True
    """
    pairs = batch_norm_pairs(model)
    producers = {producer: model.get_layer(bn) for bn, producer in pairs.items()}

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name in pairs:
            return FoldedBatchNormalization(name=layer.name)
        bn = producers.get(layer.name)
        return None if bn is None else _folded(layer, bn)

    return rebuild(model, replace)


def _folded(layer: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> keras.layers.Layer:
    folded = layer.__class__.from_config({**layer.get_config(), "use_bias": True})
    folded.build(tuple(layer.input.shape))
    weights = layer.get_weights()
    kernels = 2 if isinstance(layer, L.SeparableConv1D | L.SeparableConv2D) else 1
    bias = weights[kernels] if layer.use_bias else None
    kernel, shift = fold_into_kernel(layer, bn, weights[kernels - 1], bias)
    folded.set_weights(
        weights[: kernels - 1]
        + [np.asarray(keras.ops.convert_to_numpy(v), np.float32) for v in (kernel, shift)]
    )
    return folded
