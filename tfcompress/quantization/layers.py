"""Layers that `quantize_model` substitutes for Keras layers whose float graph does not lower to
TFLite int8 kernels. Each computes the same function as the layer it replaces."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


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
