"""Graph rewrites of the sharing package: folding BatchNormalization into the layer before it."""

from __future__ import annotations

import keras

from tfcompress._graph import DEPTHWISE, TRANSPOSED, rebuild


@keras.saving.register_keras_serializable(package="tfcompress")
class FoldedBatchNormalization(keras.layers.Layer):
    """Stands where a BatchNormalization was folded into the layer before it: passes inputs on."""

    def call(self, inputs, training=None, mask=None):  # noqa: ANN001 - BatchNormalization's signature
        return inputs

    def compute_output_shape(self, input_shape):  # noqa: ANN001
        return input_shape


L = keras.layers
_FOLDABLE = (
    L.Dense,
    L.Conv1D,
    L.Conv2D,
    L.Conv3D,
    L.DepthwiseConv1D,
    L.DepthwiseConv2D,
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
)


def batch_norm_pairs(model: keras.Model) -> dict[str, str]:
    """Map each BatchNormalization that directly and solely follows a foldable layer to that layer."""
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        producer = parents[0].operation
        if (
            isinstance(producer, _FOLDABLE)
            and len(producer._outbound_nodes) == 1
            and producer.activation in (None, keras.activations.linear)
            and layer.axis
            in (-1, [-1], len(producer.output.shape) - 1, [len(producer.output.shape) - 1])
        ):
            pairs[layer.name] = producer.name
    return pairs


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """Fold every BatchNormalization into the Conv/Dense layer before it (numerically exact).

    The BatchNormalization becomes an identity, so the kernels trained next are the ones the
    TFLite converter deploys: a converter fold after clustering would rescale shared values.
    """
    pairs = batch_norm_pairs(model)
    producers = {producer: model.get_layer(bn) for bn, producer in pairs.items()}

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name in pairs:
            return FoldedBatchNormalization(name=layer.name)
        bn = producers.get(layer.name)
        if bn is None:
            return None
        return _folded(layer, bn)

    return rebuild(model, replace)


def _folded(layer: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> keras.layers.Layer:
    import numpy as np

    config = {**layer.get_config(), "use_bias": True}
    folded = layer.__class__.from_config(config)
    folded.build(tuple(layer.input.shape))
    weights = layer.get_weights()
    kernel = weights[0]
    # output channels: depthwise kernels are (..., in, multiplier), transposed (..., out, in)
    if isinstance(layer, DEPTHWISE):
        channels = kernel.shape[-2] * kernel.shape[-1]
    else:
        channels = kernel.shape[-2] if isinstance(layer, TRANSPOSED) else kernel.shape[-1]
    bias = weights[1] if layer.use_bias else np.zeros(channels, np.float32)
    gamma = keras.ops.convert_to_numpy(bn.gamma) if bn.scale else 1.0
    beta = keras.ops.convert_to_numpy(bn.beta) if bn.center else 0.0
    mean = keras.ops.convert_to_numpy(bn.moving_mean)
    variance = keras.ops.convert_to_numpy(bn.moving_variance)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    if isinstance(layer, DEPTHWISE):
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    elif isinstance(layer, TRANSPOSED):
        kernel = kernel * scale[:, None]
    else:
        kernel = kernel * scale
    folded.set_weights(
        [kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]
    )
    return folded
