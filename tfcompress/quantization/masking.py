"""Masked sequences in full integer: the mask computed, and consumed, in ops with int8 kernels.

Keras's `Masking` computes its mask with NOT_EQUAL, REDUCE_ANY and a CAST to float, and a masked
`GlobalAveragePooling1D` casts the mask to bool and back: TFLite has no int8 kernel for any of
them, so an int8 file computes them in float between a DEQUANTIZE and a QUANTIZE.

`IntegerMasking` computes the same mask as a 0/1 number per step,
`min(max_features |x - mask_value| * 1e6, 1)`: ABS, REDUCE_MAX, MUL and MINIMUM, all int8. In an
int8 file `|x - mask_value|` is either exactly 0 (the padded steps, quantized exactly like the
mask value) or at least one step of its range, which the MUL and MINIMUM saturate to exactly 1,
so the int8 mask is exact whatever the calibrated range. With 16-bit activations
(`activation_bits=16`, `convert(mode="int16x8")`) the factor 1e6 is applied in three steps
(x10, x100, x1000, each followed by MINIMUM): TFLite's int16 requantization overflows (and wraps
around to negative values) when one step rescales by more than about 2^16.

The mask travels as that float 0/1
tensor, which downstream layers multiply by without a CAST: `IntegerGlobalAveragePooling1D`
averages the unmasked steps as `mean(x * m) / mean(m)` (MEAN, MUL, DIV: int8), and the unrolled
recurrent layers (`tfcompress.quantization.recurrent`) hold their state on masked steps.

`integer_friendly` (used by `convert` in the integer modes and by `quantize_model`) swaps
`Masking` for `IntegerMasking`, and `GlobalAveragePooling1D` for `IntegerGlobalAveragePooling1D`
in a model that masks.

Example:
    >>> import numpy as np
    >>> x = np.array([[[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]], dtype="float32")
    >>> masked = IntegerMasking()(x)
    >>> IntegerGlobalAveragePooling1D()(masked, mask=masked._keras_mask).numpy().tolist()
    [[2.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.core import compat
from tfcompress.quantization.config import PASSTHROUGH, QuantizeConfig, register_quantize_config
from tfcompress.quantization.quantizers import ActivationQuantizer

# Differences from the mask value below 1e-6 count as equal in float; an int8 difference is 0
# or at least one step of its range, so the int8 file is exact.
_SHARPNESS = 1e6
# The same factor in steps for 16-bit activations: the first multiplies the input's range by 10,
# each later one [0, 1] by at most 1000, all well inside what int16 requantization can rescale.
_SHARPNESS_16_BIT = (10.0, 100.0, 1000.0)


def step_weights(
    inputs: Any, mask_value: float, saturate: Any = None, activation_bits: int = 8
) -> Any:
    """1.0 for each step of `inputs` (batch, steps, features) with a feature that differs from
    `mask_value`, else 0.0, in ops with int8 TFLite kernels.

    `saturate` (a fake quantizer on [0, 1], or None) replaces the final MINIMUM: quantization-
    aware, the MUL gets that range and saturates at 1 in the int8 file, with no range to
    calibrate in between. `activation_bits=16` sharpens in three steps (the module's docstring
    says why); the float result is the same.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[0.5, 0.0], [0.0, 0.0]]], dtype="float32")
        >>> step_weights(x, 0.0).numpy().tolist()
        [[1.0, 0.0]]
    """
    distance = ops.abs(inputs if mask_value == 0 else inputs - mask_value)
    weights = ops.max(distance, axis=-1)
    *steps, last = _SHARPNESS_16_BIT if activation_bits == 16 else (_SHARPNESS,)
    for factor in steps:  # min(min(d * a, 1) * b, 1) == min(d * a * b, 1)
        weights = ops.minimum(weights * factor, 1.0)
    if saturate is not None:  # quantization-aware: the [0, 1] range clips, as MINIMUM would
        return saturate(weights * last)
    return ops.minimum(weights * last, 1.0)


def as_weights(mask: Any, dtype: Any = "float32") -> Any:
    """A Keras mask as 0/1 numbers: a boolean mask is cast, a float one (`IntegerMasking`'s)
    is used as is, so no CAST reaches the int8 file.

    Example:
        >>> import numpy as np
        >>> as_weights(np.array([[True, False]])).numpy().tolist()
        [[1.0, 0.0]]
    """
    if keras.backend.standardize_dtype(mask.dtype) == "bool":
        return ops.cast(mask, dtype)
    return mask


def _activation_bits(bits: int, quantize_config: QuantizeConfig | None, name: str) -> int:
    if quantize_config is not None:
        bits = quantize_config.activation_bits
    if bits not in (8, 16):
        raise ValueError(f"'{name}': activation_bits must be 8 or 16; got {bits!r}.")
    return int(bits)


def _config(quantize_config: QuantizeConfig | dict | None, name: str) -> QuantizeConfig | None:
    if isinstance(quantize_config, dict):
        quantize_config = keras.saving.deserialize_keras_object(quantize_config)
    if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
        raise TypeError(
            f"'{name}': quantize_config must be a QuantizeConfig or None; got {quantize_config!r}."
        )
    return quantize_config


def _serialized(quantize_config: QuantizeConfig | None) -> dict | None:
    if quantize_config is None:
        return None
    return keras.saving.serialize_keras_object(quantize_config)


@keras.saving.register_keras_serializable(package="tfcompress")
class StepMask(keras.layers.Layer):
    """The 0/1 mask of `IntegerMasking`, as a layer of its own (`step_weights`).

    A functional model records a mask as the output of the ops that compute it; as one layer,
    `quantize_model` gives the mask a single int8 range ([0, 1], on which 0 and 1 are exact)
    and leaves the ops inside to calibration, as post-training quantization does.

    Args:
        mask_value: the padding value.
        quantize_config: quantization-aware when set (its `activation_bits` then wins).
        activation_bits: 8, or 16 for a model converted with `mode="int16x8"`.
        **kwargs: base layer arguments.

    Example:
        >>> import numpy as np
        >>> StepMask(-1.0)(np.array([[[-1.0], [2.0]]], dtype="float32")).numpy().tolist()
        [[0.0, 1.0]]
    """

    def __init__(
        self,
        mask_value: float = 0.0,
        quantize_config: QuantizeConfig | dict | None = None,
        activation_bits: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)
        self.quantize_config = _config(quantize_config, self.name)
        self.activation_bits = _activation_bits(activation_bits, self.quantize_config, self.name)
        self._saturate = None
        if self.quantize_config is not None:
            self._saturate = ActivationQuantizer(
                num_bits=self.quantize_config.activation_bits,
                fixed_range=(0.0, 1.0),
                name=f"{self.name}_quant",
            )
            self._saturate.build(())

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        saturate = None
        if self._saturate is not None:
            saturate = lambda t: self._saturate(t, training=training)  # noqa: E731
        return step_weights(inputs, self.mask_value, saturate, self.activation_bits)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "mask_value": self.mask_value,
            "quantize_config": _serialized(self.quantize_config),
            "activation_bits": self.activation_bits,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerMasking(keras.layers.Masking):
    """`keras.layers.Masking` whose mask is a 0/1 float tensor computed in int8-friendly ops.

    Same arguments and outputs as `Masking` (masked steps are zeroed); the mask it attaches is
    1.0 for the steps kept and 0.0 for the steps masked instead of True/False. Keras layers that
    cast their mask read it the same way; `IntegerGlobalAveragePooling1D` and the unrolled
    recurrent layers consume it without a cast.

    Args:
        mask_value: the padding value; a step whose features all equal it is masked.
        quantize_config: quantization-aware when set (its `activation_bits` then wins).
        activation_bits: 8, or 16 for a model converted with `mode="int16x8"` (see the module).
        **kwargs: base layer arguments (name, dtype...).

    Example:
        >>> import numpy as np
        >>> x = np.array([[[1.0], [0.0]]], dtype="float32")
        >>> IntegerMasking().compute_mask(x).numpy().tolist()
        [[1.0, 0.0]]
    """

    def __init__(
        self,
        mask_value: float = 0.0,
        quantize_config: QuantizeConfig | dict | None = None,
        activation_bits: int = 8,
        **kwargs: Any,
    ) -> None:
        # Masking.__init__ builds the layer at once; the sublayer must exist before that
        keras.layers.Layer.__init__(self, **kwargs)
        self.mask_value = float(mask_value)
        self.supports_masking = True
        self.quantize_config = _config(quantize_config, self.name)
        self.step_mask = StepMask(
            self.mask_value,
            quantize_config=self.quantize_config,
            activation_bits=activation_bits,
            name=f"{self.name}_steps",
        )
        self.activation_bits = self.step_mask.activation_bits
        self._build_at_init()

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        weights = self.step_mask(inputs, training=training)
        return inputs * ops.expand_dims(ops.cast(weights, inputs.dtype), -1)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return self.step_mask(inputs)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "quantize_config": _serialized(self.quantize_config),
            "activation_bits": self.activation_bits,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class IntegerGlobalAveragePooling1D(keras.layers.GlobalAveragePooling1D):
    """`keras.layers.GlobalAveragePooling1D` whose masked average runs in int8 ops.

    Without a mask it is `GlobalAveragePooling1D`. With one it computes `sum(x * m) / sum(m)`
    over the steps, as Keras does, written `mean(x * m) / mean(m)` with a float mask (MEAN, MUL, DIV have
    int8 kernels) instead of casting it to bool and back.

    Args:
        data_format: "channels_last" (batch, steps, features) or "channels_first".
        keepdims: keep the steps axis (length 1).
        **kwargs: base layer arguments.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[2.0], [4.0], [9.0]]], dtype="float32")
        >>> mask = np.array([[1.0, 1.0, 0.0]], dtype="float32")
        >>> IntegerGlobalAveragePooling1D()(x, mask=mask).numpy().tolist()
        [[3.0]]
    """

    def __init__(
        self,
        data_format: str | None = None,
        keepdims: bool = False,
        quantize_config: QuantizeConfig | dict | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_format=data_format, keepdims=keepdims, **kwargs)
        self.quantize_config = _config(quantize_config, self.name)
        self._mean_range = None
        if self.quantize_config is not None:
            # the int8 file rounds the masked mean before dividing it: simulate that rounding
            # (pooling layers are built in __init__, so the state is added under an unlock)
            with compat.tracking_unlocked(self):
                self._mean_range = ActivationQuantizer(
                    num_bits=self.quantize_config.activation_bits,
                    learned_step=self.quantize_config.learned_step,
                    name=f"{self.name}_mean_quant",
                )
                self._mean_range.build(())

    def call(self, inputs: Any, mask: Any = None, training: bool | None = None) -> Any:
        if mask is None:
            return super().call(inputs)
        channels_last = self.data_format == "channels_last"
        steps_axis = 1 if channels_last else 2
        weights = ops.expand_dims(as_weights(mask, inputs.dtype), 2 if channels_last else 1)
        # means, not sums: a sum of T steps needs a T times coarser int8 step than its inputs
        total = ops.mean(inputs * weights, axis=steps_axis, keepdims=self.keepdims)
        if self._mean_range is not None:
            total = self._mean_range(total, training=training)
        share = ops.mean(weights, axis=steps_axis, keepdims=self.keepdims)
        return total / share

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantize_config": _serialized(self.quantize_config)}


# quantization-aware, the mask leaves StepMask on its [0, 1] range already
register_quantize_config(StepMask, QuantizeConfig(role=PASSTHROUGH))
