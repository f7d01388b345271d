"""Layers that `quantize_model` substitutes for Keras layers whose float graph does not lower to
TFLite int8 kernels. Each computes the same function as the layer it replaces."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.quantization.config import QuantizeConfig
from tfcompress.quantization.quantizers import ActivationQuantizer
from tfcompress.quantization.wrapper import QuantizeWrapper


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerLayerNormalization(keras.layers.LayerNormalization):
    """`LayerNormalization` written as `(x - mean) * rsqrt(var + eps) * gamma + beta`.

    Keras computes `x * inv - mean * inv + beta`, which the converter lowers with a NEG that has no
    int8 kernel, so the int8 file falls back to float around it (DEQUANTIZE, NEG, QUANTIZE). This
    order uses only SUB, MUL, MEAN, RSQRT and ADD, all of which run in int8. Same arguments and
    weights as `keras.layers.LayerNormalization`; `quantize_model` uses it in place of one.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
        >>> ours, theirs = IntegerLayerNormalization(), keras.layers.LayerNormalization()
        >>> bool(np.allclose(ours(x), theirs(x), atol=1e-5))
        True
    """

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        rank = len(x.shape)
        axes = sorted(a % rank for a in axes)
        shape = [1] * rank
        for axis in axes:
            shape[axis] = x.shape[axis]

        def broadcast(weight: Any) -> Any:
            return ops.reshape(ops.cast(weight, "float32"), shape)

        centered = x - ops.mean(x, axis=axes, keepdims=True)
        variance = ops.mean(centered * centered, axis=axes, keepdims=True)
        # Keras's deprecated rms_scaling divides x (not x - mean) by the standard deviation.
        outputs = (x if self.rms_scaling else centered) * ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            outputs = outputs * broadcast(self.gamma)
        if self.beta is not None:
            outputs = outputs + broadcast(self.beta)
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerNormalization(keras.layers.Normalization):
    """`Normalization` written as `x * (1 / std) + (-mean / std)`.

    Keras computes `(x - mean) / std`. When `x` is the model's input and `mean` lies outside the
    input's range (ImageNet means on inputs in [0, 1]), the converter requantizes the input in
    float before the SUB (DEQUANTIZE, QUANTIZE). A multiply then an add by constants runs in int8
    whatever the ranges. Same arguments and weights as `keras.layers.Normalization`.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).uniform(0, 1, (4, 3)).astype("float32")
        >>> kwargs = {"mean": [0.5, 0.4, 0.3], "variance": [0.04, 0.09, 0.16]}
        >>> ours, theirs = IntegerNormalization(**kwargs), keras.layers.Normalization(**kwargs)
        >>> bool(np.allclose(ours(x), theirs(x), atol=1e-5))
        True
    """

    def call(self, inputs: Any) -> Any:
        if self.invert:
            return super().call(inputs)
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        scale = 1.0 / ops.maximum(ops.sqrt(self.variance), keras.backend.epsilon())
        return inputs * scale + (-self.mean * scale)


_PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`MultiHeadAttention` trained the way TFLite runs it in int8.

    The query, key, value and output projections are `QuantizeWrapper`s (fake-quantized kernels),
    and the tensors TFLite stores in int8 get ranges: the projected query (after scaling), key and
    value, the attention scores, the softmax output (TFLite's fixed 1/256 scale) and the attention
    output. It always computes attention explicitly (not with a fused dot-product kernel), as the
    converted graph does. `quantize_model` uses it in place of every `MultiHeadAttention`.

    Args:
        quantize_config: the `QuantizeConfig` of the projections and ranges (default 8 bits).
        **kwargs: the arguments of `keras.layers.MultiHeadAttention`.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
        >>> layer = QuantizedMultiHeadAttention(num_heads=2, key_dim=4)
        >>> tuple(layer(x, x).shape)
        (2, 5, 8)
    """

    def __init__(self, *args: Any, quantize_config: Any = None, **kwargs: Any) -> None:

        super().__init__(*args, **kwargs)
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        self.quantize_config = quantize_config or QuantizeConfig()

    def build(self, query_shape: Any, value_shape: Any, key_shape: Any = None) -> None:

        super().build(query_shape, value_shape, key_shape)
        config = self.quantize_config
        self._quantized_projections = []
        for attribute in _PROJECTIONS:
            dense = getattr(self, attribute)
            wrapper = QuantizeWrapper(dense, config=config, name=f"quant_{dense.name}")
            wrapper.build(dense.get_build_config()["input_shape"])
            self._quantized_projections.append(wrapper)  # tracked here, once
            object.__setattr__(self, attribute, wrapper)  # called by MultiHeadAttention.call

        def ranged(name: str, fixed: tuple[float, float] | None = None) -> ActivationQuantizer:
            quantizer = ActivationQuantizer(
                num_bits=config.activation_bits,
                learned_step=config.learned_step,
                fixed_range=fixed,
                name=f"{self.name}_{name}_quant",
            )
            quantizer.build(())  # scalar ranges: built now, so a saved model loads them back
            return quantizer

        self._query_range = ranged("query")
        self._key_range = ranged("key")
        self._value_range = ranged("value")
        self._scores_range = ranged("scores")
        self._probabilities_range = ranged("probabilities", (0.0, 255.0 / 256.0))
        self._attention_range = ranged("attention")

    def copy_weights_from(self, layer: keras.layers.MultiHeadAttention) -> None:
        """Take the projection weights of the float `layer` this one replaces."""
        for ours, theirs in zip(self._quantized_projections, _PROJECTIONS, strict=True):
            ours.layer.set_weights(getattr(layer, theirs).get_weights())

    def _compute_attention(
        self,
        query: Any,
        key: Any,
        value: Any,
        attention_mask: Any = None,
        training: bool | None = None,
        return_attention_scores: bool = False,
        use_causal_mask: bool = False,
    ) -> tuple[Any, Any]:
        if use_causal_mask:
            causal = self._compute_causal_mask(query, value)
            attention_mask = (
                causal
                if attention_mask is None
                else ops.logical_and(ops.cast(attention_mask, "bool"), causal)
            )
        query = self._query_range(
            ops.multiply(query, ops.cast(self._inverse_sqrt_key_dim, query.dtype)),
            training=training,
        )
        key = self._key_range(key, training=training)
        value = self._value_range(value, training=training)
        scores = self._scores_range(
            ops.einsum(self._dot_product_equation, key, query), training=training
        )
        probabilities = self._probabilities_range(
            self._masked_softmax(scores, attention_mask), training=training
        )
        if self._dropout > 0.0:
            dropped = self._dropout_layer(probabilities, training=training)
        else:
            dropped = probabilities
        attention = ops.einsum(self._combine_equation, dropped, value)
        return self._attention_range(attention, training=training), probabilities

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "quantize_config": keras.saving.serialize_keras_object(self.quantize_config),
        }


@keras.saving.register_keras_serializable(package="tfcompress")
def integer_elu(x: Any, alpha: float = 1.0) -> Any:
    """ELU as `relu(x) + alpha * (exp(min(x, 0)) - 1)`: ops that all have int8 TFLite kernels.

    TFLite's ELU op has no int8 kernel, so an int8 file keeps a plain ELU in float
    (DEQUANTIZE, ELU, QUANTIZE); this form computes the same values with RELU, MINIMUM and EXP.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-3, 3, 7).astype("float32")
        >>> bool(np.allclose(integer_elu(x), keras.activations.elu(x), atol=1e-6))
        True
    """
    x = ops.convert_to_tensor(x)
    return ops.relu(x) + alpha * (ops.exp(ops.minimum(x, 0.0)) - 1.0)


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerELU(keras.layers.ELU):
    """`keras.layers.ELU` computed with `integer_elu`, so it runs in int8 in TFLite.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-3, 3, 7).astype("float32")
        >>> bool(np.allclose(IntegerELU(alpha=0.5)(x), keras.layers.ELU(alpha=0.5)(x), atol=1e-6))
        True
    """

    def call(self, inputs: Any) -> Any:
        return integer_elu(inputs, self.alpha)


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerPReLU(keras.layers.PReLU):
    """`keras.layers.PReLU` as `max(x, 0) + alpha * min(x, 0)`, for 16-bit activations.

    TF's converter has no int16x8 form of TFLite's PRELU op; RELU, MINIMUM, MUL and ADD have
    one, so `convert(mode="int16x8")` writes a PReLU model this way. Same arguments and weights
    as `keras.layers.PReLU`.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-3, 3, 12).reshape(2, 6).astype("float32")
        >>> ours, theirs = IntegerPReLU(), keras.layers.PReLU()
        >>> ours.build(x.shape); theirs.build(x.shape)
        >>> ours.set_weights([np.full((6,), 0.25, "float32")])
        >>> theirs.set_weights(ours.get_weights())
        >>> bool(np.allclose(ours(x), theirs(x)))
        True
    """

    def call(self, inputs: Any) -> Any:
        return ops.maximum(inputs, 0.0) + self.alpha * ops.minimum(inputs, 0.0)


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerGroupNormalization(keras.layers.GroupNormalization):
    """`GroupNormalization` written as `(x - mean) * rsqrt(var + eps) * gamma + beta` per group.

    Keras computes the variance with SQUARE and the shift with NEG, which have no int8 TFLite
    kernels (the int8 file computes them in float); this order uses SUB, MUL, MEAN, RSQRT and ADD.
    Same arguments and weights as `keras.layers.GroupNormalization`.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 6)).astype("float32")
        >>> ours, theirs = IntegerGroupNormalization(3), keras.layers.GroupNormalization(3)
        >>> bool(np.allclose(ours(x), theirs(x), atol=1e-5))
        True
    """

    def _apply_normalization(self, reshaped_inputs: Any, input_shape: Any) -> Any:
        dtype = reshaped_inputs.dtype
        x = ops.cast(reshaped_inputs, "float32")
        axes = list(range(1, len(x.shape)))
        axes.pop(-2 if self.axis == -1 else self.axis - 1)  # the group axis is not reduced
        centered = x - ops.mean(x, axis=axes, keepdims=True)
        variance = ops.mean(centered * centered, axis=axes, keepdims=True)
        outputs = centered * ops.rsqrt(variance + self.epsilon)
        shape = self._create_broadcast_shape(input_shape)
        if self.scale:
            outputs = outputs * ops.reshape(ops.cast(self.gamma, "float32"), shape)
        if self.center:
            outputs = outputs + ops.reshape(ops.cast(self.beta, "float32"), shape)
        return ops.cast(outputs, dtype)


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerUnitNormalization(keras.layers.UnitNormalization):
    """`UnitNormalization` written as `x * rsqrt(max(sum(x * x), eps))`.

    Keras's L2 normalization squares with SQUARE, which has no int8 TFLite kernel; MUL, SUM,
    MAXIMUM and RSQRT all run in int8. Same arguments as `keras.layers.UnitNormalization`.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
        >>> ours, theirs = IntegerUnitNormalization(), keras.layers.UnitNormalization()
        >>> bool(np.allclose(ours(x), theirs(x), atol=1e-6))
        True
    """

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        squares = ops.sum(x * x, axis=self.axis, keepdims=True)
        return ops.cast(x * ops.rsqrt(ops.maximum(squares, 1e-12)), self.compute_dtype)


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerRMSNormalization(keras.layers.RMSNormalization):
    """`RMSNormalization` written as `x * rsqrt(mean(x * x) + eps) * scale`.

    Keras squares with SQUARE, which has no int8 TFLite kernel; MUL, MEAN, ADD and RSQRT all
    run in int8. Same arguments and weights as `keras.layers.RMSNormalization`.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
        >>> ours, theirs = IntegerRMSNormalization(), keras.layers.RMSNormalization()
        >>> bool(np.allclose(ours(x), theirs(x), atol=1e-5))
        True
    """

    def call(self, x: Any) -> Any:
        inputs = ops.cast(x, "float32")
        axes = self.axis if isinstance(self.axis, list | tuple) else [self.axis]
        mean_square = ops.mean(inputs * inputs, axis=axes, keepdims=True)
        rank = len(inputs.shape)
        shape = [
            inputs.shape[a] if a % rank in {b % rank for b in axes} else 1 for a in range(rank)
        ]
        scale = ops.reshape(ops.cast(self.scale, "float32"), shape)
        outputs = inputs * ops.rsqrt(mean_square + self.epsilon) * scale
        return ops.cast(outputs, self.compute_dtype)
