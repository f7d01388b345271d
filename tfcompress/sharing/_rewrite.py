"""Rebuild a functional or Sequential model with some layers replaced (shared by sharing/)."""

from __future__ import annotations

from collections.abc import Callable

import keras


def check_rewritable(model: keras.Model, what: str) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} expects a keras.Model or a layer; got {type(model).__name__}.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"{what}: model '{model.name}' is unbuilt or subclassed. Build it as a functional or "
            "Sequential model with keras.Input so its layers can be rewritten."
        )


def fresh_copy(layer: keras.layers.Layer, input_shape: tuple | None = None) -> keras.layers.Layer:
    """A new layer of the same class and config, carrying the same weight values."""
    copy = layer.__class__.from_config(layer.get_config())
    if input_shape is None and _has_single_input(layer):
        input_shape = tuple(layer.input.shape)
    copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    return copy


def _has_single_input(layer: keras.layers.Layer) -> bool:
    try:
        return not isinstance(layer.input, list | tuple)
    except (AttributeError, ValueError):
        return False


def rebuild(
    model: keras.Model, replace: Callable[[keras.layers.Layer], keras.layers.Layer | None]
) -> keras.Model:
    """Clone `model`; `replace(layer)` returns the new layer, or None to keep a fresh copy."""

    replaced_names: set[str] = set()

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        replaced = replace(layer)
        if replaced is not None:
            replaced_names.add(layer.name)
            return replaced
        return layer.__class__.from_config(layer.get_config())

    clone_model = keras.models.clone_model(model, clone_function=clone)
    _copy_untouched_weights(model, clone_model, replaced_names)
    return clone_model


def _copy_untouched_weights(source: keras.Model, target: keras.Model, replaced: set[str]) -> None:
    """clone_model rebuilds kept layers from their config; give them back their weight values."""
    old_layers = {layer.name: layer for layer in source.layers if layer.name not in replaced}
    for new in target.layers:
        old = old_layers.get(new.name)
        if old is not None and old.weights and type(new) is type(old):
            new.set_weights(old.get_weights())


@keras.saving.register_keras_serializable(package="tfcompress")
class FoldedBatchNormalization(keras.layers.Layer):
    """Stands where a BatchNormalization was folded into the layer before it: passes inputs on."""

    def call(self, inputs, training=None, mask=None):  # noqa: ANN001 - BatchNormalization's signature
        return inputs

    def compute_output_shape(self, input_shape):  # noqa: ANN001
        return input_shape


_FOLDABLE = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
    keras.layers.Conv1D,
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
    bias = (
        weights[1]
        if layer.use_bias
        else np.zeros(
            kernel.shape[-1]
            if not isinstance(layer, keras.layers.DepthwiseConv2D)
            else kernel.shape[2] * kernel.shape[3],
            np.float32,
        )
    )
    gamma = keras.ops.convert_to_numpy(bn.gamma) if bn.scale else 1.0
    beta = keras.ops.convert_to_numpy(bn.beta) if bn.center else 0.0
    mean = keras.ops.convert_to_numpy(bn.moving_mean)
    variance = keras.ops.convert_to_numpy(bn.moving_variance)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = kernel * scale.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    folded.set_weights(
        [kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]
    )
    return folded
