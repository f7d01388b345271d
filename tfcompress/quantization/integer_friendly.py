"""One rewrite that makes a float model's graph lower to int8 TFLite kernels only.

Some Keras layers compute their function with ops that TFLite has no int8 kernel for (NEG and
SQUARE in the normalizations, ELU, the fused recurrent loop), so an int8 file keeps them in
float. `integer_friendly(model)` swaps each for a layer that computes the same function with the
same weights in int8-friendly ops. `convert` applies it in the integer modes (PTQ) and
`quantize_model` applies it before its own rewrite (QAT), so both paths share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

from tfcompress.core import compat, graph
from tfcompress.quantization.layers import (
    IntegerELU,
    IntegerGroupNormalization,
    IntegerLayerNormalization,
    IntegerNormalization,
    IntegerPReLU,
    IntegerRMSNormalization,
    IntegerUnitNormalization,
    integer_elu,
)
from tfcompress.quantization.masking import IntegerGlobalAveragePooling1D, IntegerMasking
from tfcompress.quantization.recurrent import has_recurrent_layers, unroll_recurrent, unrolled_layer
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.source import TraceableModel

if TYPE_CHECKING:
    from tfcompress.tflite.source import TraceableModel

L = keras.layers
INTEGER_MODES = ("int8", "int16x8", "edgetpu")

_REPLACEMENTS: dict[type, type] = {
    L.LayerNormalization: IntegerLayerNormalization,
    L.Normalization: IntegerNormalization,
    L.GroupNormalization: IntegerGroupNormalization,
    L.RMSNormalization: IntegerRMSNormalization,
    L.UnitNormalization: IntegerUnitNormalization,
    L.ELU: IntegerELU,
    L.Masking: IntegerMasking,
}
# Replaced only with 16-bit activations: TF's converter has no int16x8 kernel for their op.
_SIXTEEN_BIT: dict[type, type] = {L.PReLU: IntegerPReLU}
# Replaced only in a model that masks (a mask they consume is then a 0/1 float, no CAST).
_MASK_CONSUMERS: dict[type, type] = {L.GlobalAveragePooling1D: IntegerGlobalAveragePooling1D}


_ADAPTIVE_AVERAGE = {
    L.AdaptiveAveragePooling1D: L.AveragePooling1D,
    L.AdaptiveAveragePooling2D: L.AveragePooling2D,
}


def _plain_average_pooling(layer: Any) -> keras.layers.Layer | None:
    """Adaptive average pooling whose input divides evenly is plain average pooling.

    Keras lowers adaptive pooling to two AVERAGE_POOL_2Ds, a CONCATENATION and a GATHER, whose
    int8 version loses most of the signal (top-1 agreement 0.77 on a test model); one
    AVERAGE_POOL_2D with window = stride = input / output computes the same and keeps it.
    """
    build_config = layer.get_build_config() if layer.built else None
    if build_config is None:
        return None
    shape = tuple(build_config["input_shape"])
    spatial = shape[1:-1] if layer.data_format == "channels_last" else shape[2:]
    sizes = tuple(layer.output_size)
    if any(dim is None or dim % size for dim, size in zip(spatial, sizes, strict=True)):
        return None
    window = tuple(dim // size for dim, size in zip(spatial, sizes, strict=True))
    pooling = _ADAPTIVE_AVERAGE[type(layer)]
    return pooling(window, strides=window, data_format=layer.data_format, name=layer.name)


def _has_elu_activation(layer: Any) -> bool:
    return getattr(layer, "activation", None) is keras.activations.elu


def _copy_as(layer: keras.layers.Layer, replacement: type) -> keras.layers.Layer:
    if layer.built:
        return graph.fresh_copy(layer, as_class=replacement)
    return replacement.from_config(layer.get_config())


def masks_steps(model: Any) -> bool:
    """True when `model` (or a model nested in it) has a `Masking` layer or an
    `Embedding(mask_zero=True)`, whose mask changes what the layers after it compute.

    Example:
        >>> inputs = keras.Input((4, 2))
        >>> masks_steps(keras.Model(inputs, keras.layers.Masking()(inputs)))
        True
    """
    return any(
        isinstance(layer, L.Masking) or getattr(layer, "mask_zero", False)
        for layer in compat.nested_layers(model)
    )


def integer_friendly_layer(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """The int8-friendly equivalent of `layer` (same config and weights), or None if it has none.

    Example:
        >>> type(integer_friendly_layer(keras.layers.LayerNormalization())).__name__
        'IntegerLayerNormalization'
        >>> integer_friendly_layer(keras.layers.Dense(2)) is None
        True
    """
    replacement = _REPLACEMENTS.get(type(layer))
    if replacement is not None:
        return _copy_as(layer, replacement)
    if type(layer) in _ADAPTIVE_AVERAGE:
        return _plain_average_pooling(layer)
    if _has_elu_activation(layer):  # Dense(..., activation="elu"), Activation("elu")
        copy = type(layer).from_config({**layer.get_config(), "activation": integer_elu})
        build_config = layer.get_build_config()
        if build_config is not None:
            copy.build_from_config(build_config)
            copy.set_weights(layer.get_weights())
        return copy
    return unrolled_layer(layer)


def needs_rewrite(model: Any, activation_bits: int = 8) -> bool:
    """True when `model` (or a model nested in it) has a layer `integer_friendly` replaces.

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> needs_rewrite(build_digits_cnn())
        False
    """
    for layer in getattr(model, "layers", None) or []:
        if isinstance(layer, keras.Model) and needs_rewrite(layer, activation_bits):
            return True
        if type(layer) in (*_REPLACEMENTS, *_ADAPTIVE_AVERAGE) or _has_elu_activation(layer):
            return True
        if activation_bits == 16 and type(layer) in _SIXTEEN_BIT:
            return True
    return has_recurrent_layers(model)


def integer_friendly(model: keras.Model, activation_bits: int = 8) -> keras.Model:
    """A copy of `model` whose layers all lower to int8 TFLite kernels where an equivalent exists.

    LayerNormalization, Normalization, GroupNormalization, RMSNormalization, UnitNormalization,
    ELU (and `activation="elu"`) become the `tfcompress.quantization.Integer*` layers;
    AdaptiveAveragePooling1D/2D whose input divides evenly becomes AveragePooling1D/2D; LSTM,
    GRU, SimpleRNN and Bidirectional are unrolled (`unroll_recurrent`). `Masking` becomes
    `IntegerMasking` and, in a model that masks, `GlobalAveragePooling1D` becomes
    `IntegerGlobalAveragePooling1D` (`tfcompress.quantization.masking`). The copy computes the same
    function with the same weights; a model with nothing to replace is returned as is.
    `activation_bits=16` (for `convert(mode="int16x8")`) gives the masks their 16-bit form and
    writes PReLU as `IntegerPReLU` (TF's converter has no 16-bit PRELU).

    Example:
        >>> import numpy as np
        >>> inputs = keras.Input((4, 6))
        >>> model = keras.Model(inputs, keras.layers.LayerNormalization()(inputs))
        >>> rewritten = integer_friendly(model)
        >>> type(rewritten.layers[1]).__name__
        'IntegerLayerNormalization'
        >>> x = np.random.default_rng(0).normal(size=(2, 4, 6)).astype("float32")
        >>> bool(np.allclose(rewritten(x), model(x), atol=1e-5))
        True
    """
    if not needs_rewrite(model, activation_bits):
        return model
    if has_recurrent_layers(model):
        model = unroll_recurrent(model)  # checks static lengths, says what to do
    masked = masks_steps(model)

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, keras.Model) and needs_rewrite(layer, activation_bits):
            return integer_friendly(layer, activation_bits)
        if activation_bits == 16 and type(layer) in _SIXTEEN_BIT:
            return _copy_as(layer, _SIXTEEN_BIT[type(layer)])
        if type(layer) is L.Masking and activation_bits != 8:
            return IntegerMasking.from_config(
                {**layer.get_config(), "activation_bits": activation_bits}
            )
        if masked and type(layer) in _MASK_CONSUMERS:
            return _copy_as(layer, _MASK_CONSUMERS[type(layer)])
        return integer_friendly_layer(layer)

    return graph.rebuild(model, replace, fresh_masks=masked)


def integer_friendly_source(source: TraceableModel, mode: str) -> TraceableModel:
    """`convert`'s hook: trace `integer_friendly(model)` where the plain graph would not convert.

    In the integer modes every replacement applies. In the float modes only recurrent layers of a
    model whose batch size is not fixed are unrolled: TF's recurrent loop then needs a static
    element shape (`tf.TensorListReserve`) and does not convert at all. Sources that are not
    Keras 3 models and models with nothing to replace are returned unchanged.

    Example:
        >>> from tfcompress.tflite.source import load_source
        >>> inputs = keras.Input((4, 2))
        >>> model = keras.Model(inputs, keras.layers.GRU(3)(inputs))
        >>> source = integer_friendly_source(load_source(model), "int8")
        >>> type(source.owner.layers[1]).__name__
        'UnrolledGRU'
    """
    model = getattr(source, "owner", None)
    if not isinstance(model, keras.Model):
        return source
    if mode in INTEGER_MODES:
        bits = 16 if mode == "int16x8" else 8
        if not needs_rewrite(model, bits):
            return source
        rewrite = lambda model: integer_friendly(model, bits)  # noqa: E731
    else:
        dynamic_batch = any(spec.shape[0] is None for spec in source.input_specs)
        if not (dynamic_batch and has_recurrent_layers(model)):
            return source
        rewrite = unroll_recurrent

    try:
        rewritten = rewrite(model)
    except (TypeError, ValueError) as error:
        raise ConversionError(
            f"mode={mode!r}: '{model.name}' cannot be rewritten into ops TFLite converts: {error}"
        ) from error

    def call(inputs: list[Any]) -> Any:
        return rewritten(inputs[0] if len(inputs) == 1 else inputs, training=False)

    return TraceableModel(source.name, call, source.input_specs, rewritten)
