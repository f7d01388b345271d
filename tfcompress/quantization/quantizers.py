"""Fake-quant quantizers: weights (symmetric, narrow range) and activations (moving-average range)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcompress")
class WeightQuantizer:
    """Symmetric narrow-range fake quantization of a weight tensor (the TFLite int8 weight spec).

    The range is the last value of `max(|w|)`, per output channel when `per_channel` is true. It is
    recomputed from the weights at every step, so the converter folds it into constants.

    Args:
        num_bits: bits per weight, 2 to 8.
        per_channel: one scale per output channel (the last axis of the kernel given to `__call__`).

    Example:
        >>> import numpy as np
        >>> q = WeightQuantizer(num_bits=8, per_channel=True)
        >>> w = np.array([[0.5, -2.0], [0.25, 1.0]], dtype="float32")
        >>> np.allclose(keras.ops.convert_to_numpy(q(w)), w, atol=0.01)
        True
    """

    def __init__(self, num_bits: int = 8, per_channel: bool = True) -> None:
        if not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
            raise ValueError(
                f"WeightQuantizer: num_bits must be an int in [2, 8]; got {num_bits!r}."
            )
        self.num_bits = num_bits
        self.per_channel = bool(per_channel)

    def __call__(self, kernel: Any) -> Any:
        kernel = ops.convert_to_tensor(kernel)
        if self.per_channel:
            axes = tuple(range(len(kernel.shape) - 1))
            bound = ops.max(ops.abs(kernel), axis=axes)
            axis = -1
        else:
            bound = ops.max(ops.abs(kernel))
            axis = None
        # A zero range would divide by zero in the scale; any positive bound quantizes 0 exactly.
        bound = ops.maximum(ops.stop_gradient(bound), 1e-8)
        return keras.quantizers.fake_quant_with_min_max_vars(
            kernel, -bound, bound, num_bits=self.num_bits, narrow_range=True, axis=axis
        )

    def get_config(self) -> dict[str, Any]:
        return {"num_bits": self.num_bits, "per_channel": self.per_channel}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WeightQuantizer:
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfcompress")
class ActivationQuantizer(keras.layers.Layer):
    """Asymmetric fake quantization of a tensor with its range tracked by a moving average.

    In training the batch min/max update an exponential moving average (the first batch sets it);
    at inference the stored range is used. The range always contains 0, as TFLite requires.

    Args:
        num_bits: 8 for the TFLite int8 scheme; 16 emulates 16-bit activations in Keras
            (TF 2.21's converter cannot yet export fake quant to int16x8).
        decay: weight of the old range in the moving average.
        fixed_range: a constant `(min, max)` instead of a tracked one, for ops whose output
            scale TFLite fixes (softmax and sigmoid: 1/256, tanh: 1/128).

    Example:
        >>> import numpy as np
        >>> q = ActivationQuantizer()
        >>> _ = q(np.linspace(-1, 3, 16, dtype="float32").reshape(2, 8), training=True)
        >>> [round(float(v), 2) for v in q.get_weights()[:2]]
        [-1.0, 3.0]
    """

    def __init__(
        self,
        num_bits: int = 8,
        decay: float = 0.999,
        fixed_range: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if fixed_range is not None:
            fixed_range = (float(fixed_range[0]), float(fixed_range[1]))
            if not fixed_range[0] <= 0.0 < fixed_range[1]:
                raise ValueError(
                    f"ActivationQuantizer: fixed_range must satisfy min <= 0 < max; got {fixed_range}."
                )
        self.fixed_range = fixed_range
        if num_bits not in (8, 16):
            raise ValueError(f"ActivationQuantizer: num_bits must be 8 or 16; got {num_bits!r}.")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ActivationQuantizer: decay must be in [0, 1); got {decay!r}.")
        self.num_bits = num_bits
        self.decay = float(decay)

    def build(self, input_shape: Any) -> None:
        def state(name: str, value: float) -> Any:
            return self.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(value),
                trainable=False,
                aggregation="mean",
            )

        self.range_min = state("range_min", -6.0)
        self.range_max = state("range_max", 6.0)
        self.seen = state("seen", 0.0)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if self.fixed_range is not None:
            low, high = self.fixed_range
            return keras.quantizers.fake_quant_with_min_max_vars(
                inputs, low, high, num_bits=self.num_bits
            )
        if training:
            self._update_range(inputs)
        low = ops.minimum(self.range_min, 0.0)
        high = ops.maximum(ops.maximum(self.range_max, 0.0), low + 1e-6)
        # 16-bit activations are symmetric in TFLite's int16x8 scheme.
        if self.num_bits == 16:
            bound = ops.maximum(-low, high)
            low, high = -bound, bound
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=self.num_bits, narrow_range=self.num_bits == 16
        )

    def _update_range(self, inputs: Any) -> None:
        batch_min = ops.stop_gradient(ops.cast(ops.min(inputs), "float32"))
        batch_max = ops.stop_gradient(ops.cast(ops.max(inputs), "float32"))
        keep = ops.where(self.seen > 0.0, self.decay, 0.0)
        self.range_min.assign(keep * self.range_min + (1.0 - keep) * batch_min)
        self.range_max.assign(keep * self.range_max + (1.0 - keep) * batch_max)
        self.seen.assign(1.0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_bits": self.num_bits,
            "decay": self.decay,
            "fixed_range": self.fixed_range,
        }
