"""Fake-quant quantizers: weights (symmetric, narrow range) and activations (moving-average range)."""

from __future__ import annotations

from math import prod
from typing import Any

import keras
import numpy as np
from keras import ops


def _round_ste(x: Any) -> Any:
    """Round half up (as TensorFlow's fake quant does) with a straight-through gradient."""
    return x + ops.stop_gradient(ops.floor(x + 0.5) - x)


def _scale_gradient(x: Any, factor: float) -> Any:
    """`x` in the forward pass; its gradient multiplied by `factor` in the backward pass."""
    return x * factor + ops.stop_gradient(x - x * factor)


def global_batch_range(low: Any, high: Any) -> tuple[Any, Any]:
    """The range of the global batch from one replica's `(low, high)` under `tf.distribute`.

    Each replica of a MirroredStrategy or MultiWorkerMirroredStrategy sees a slice of the batch;
    without this, every replica would track its slice's range and the (averaged) ranges would
    differ from one-device training on the same global batch. Outside a strategy it returns its
    arguments.

    Example:
        >>> low, high = global_batch_range(np.float32(-1.0), np.float32(2.0))
        >>> float(low), float(high)
        (-1.0, 2.0)
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return low, high
    # one all-gather per quantizer: the negated minimum and the maximum, (replicas, 2, ...)
    both = ops.expand_dims(ops.stack([-ops.convert_to_tensor(low), high]), 0)
    largest = ops.max(context.all_gather(both, axis=0), axis=0)
    return -largest[0], largest[1]


def _nudged_range(low: Any, high: Any, num_bits: int, narrow_range: bool) -> tuple[Any, ...]:
    """TensorFlow's fake-quant range nudged so 0 is a level: `(min, max, scale, zero point)`.

    The same float32 arithmetic as the op's kernel (zero point rounded half up), per tensor or
    per channel, so a mask `min <= x <= max` passes gradients exactly where the op's does.
    """
    import tensorflow as tf

    qmin = 1.0 if narrow_range else 0.0
    qmax = float(2**num_bits - 1)
    scale = (high - low) / (qmax - qmin)
    from_min = qmin - low / scale
    below = tf.floor(from_min)
    zero_point = tf.where(from_min - below >= 0.5, below + 1.0, below)
    zero_point = tf.clip_by_value(zero_point, qmin, qmax)
    return (qmin - zero_point) * scale, (qmax - zero_point) * scale, scale, zero_point - qmin


def _passes_inside(x: Any, nudged_min: Any, nudged_max: Any) -> Any:
    """The fake-quant gradient: `upstream` where `x` lies in the nudged range, else 0."""
    import tensorflow as tf

    inside = tf.logical_and(x >= nudged_min, x <= nudged_max)
    return lambda upstream: tf.where(inside, upstream, tf.zeros((), upstream.dtype))


def fake_quant_keeping_mask(
    inputs: Any, low: Any, high: Any, num_bits: int = 8, narrow_range: bool = False
) -> Any:
    """`fake_quant_with_min_max_vars` for training, whose backward pass keeps a 1-byte mask.

    TensorFlow's gradient of the fake-quant op reads the float input again, so training keeps
    every quantized activation twice (the op's input for its gradient, its output for the next
    layer). Here the forward pass records which values fell inside the (nudged) range as a
    boolean tensor and the gradient passes `dy` there, as TensorFlow's does; the range gets
    no gradient (it is tracked, not trained). Same values, same input gradient, a quarter of
    the memory for the saved tensor. Inference (and conversion) uses the plain op.

    Example:
        >>> import tensorflow as tf
        >>> x = tf.constant([-1.0, 0.3, 2.0])
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     y = fake_quant_keeping_mask(x, -0.5, 1.0)
        >>> [float(v) for v in tape.gradient(y, x)]
        [0.0, 1.0, 0.0]
    """
    import tensorflow as tf

    options = {"num_bits": int(num_bits), "narrow_range": bool(narrow_range)}
    low = tf.reshape(tf.cast(low, tf.float32), ())
    high = tf.reshape(tf.cast(high, tf.float32), ())
    nudged_min, nudged_max, _, _ = _nudged_range(low, high, int(num_bits), bool(narrow_range))

    @tf.custom_gradient
    def fake_quant(x: Any) -> Any:
        outputs = tf.quantization.fake_quant_with_min_max_vars(x, low, high, **options)
        # two compares on scalars: cheaper than the op's own gradient of a tensor of ones
        return outputs, _passes_inside(x, nudged_min, nudged_max)

    inputs = tf.convert_to_tensor(inputs)
    if inputs.dtype != tf.float32:  # the op is float32 only
        return tf.cast(fake_quant(tf.cast(inputs, tf.float32)), inputs.dtype)
    return fake_quant(inputs)


def fake_quant_per_channel_for_training(
    inputs: Any, low: Any, high: Any, num_bits: int = 8, narrow_range: bool = False
) -> Any:
    """Per-channel (last axis) fake quant for training, with TensorFlow's nudging and gradient.

    `fake_quant_with_min_max_vars_per_channel` and its gradient loop over the channels with
    strided reads: on CPU they took most of a ResNet50 QAT step's extra time (25M weights each
    step). Here the op's nudged range is computed once per channel and the rest is broadcast
    elementwise ops. The levels are the op's; a value exactly halfway between two levels may
    round the other way (a few in a million). The gradient passes where the input lies in the
    nudged range, exactly as TensorFlow's does; the range gets none (weight ranges follow the
    weights, they are not trained). Inference and conversion keep the op the converter reads.

    Example:
        >>> import numpy as np
        >>> w = np.array([[0.5, -2.0], [0.25, 1.0]], dtype="float32")
        >>> out = fake_quant_per_channel_for_training(w, [-0.5, -2.0], [0.5, 2.0], 8, True)
        >>> np.allclose(out, w, atol=0.01)
        True
    """
    import tensorflow as tf

    inputs = tf.convert_to_tensor(inputs, tf.float32)
    low = tf.stop_gradient(tf.cast(low, tf.float32))
    high = tf.stop_gradient(tf.cast(high, tf.float32))
    nudged_min, nudged_max, scale, offset = _nudged_range(low, high, num_bits, narrow_range)
    inverse = 1.0 / scale

    @tf.custom_gradient
    def fake_quant(x: Any) -> Any:
        shifted = tf.minimum(tf.maximum(x, nudged_min), nudged_max) - nudged_min
        outputs = (tf.floor(shifted * inverse + 0.5) - offset) * scale
        return outputs, _passes_inside(x, nudged_min, nudged_max)

    return fake_quant(inputs)


def learned_step_fake_quant(
    x: Any, step: Any, qmin: int, qmax: int, zero_point: Any = 0.0, grad_factor: float = 1.0
) -> Any:
    """LSQ fake quantization (Esser et al., 2020): `(round(clip(x / s + z, qmin, qmax)) - z) * s`.

    The forward value is that of `fake_quant_with_min_max_vars(x, (qmin - z) * s, (qmax - z) * s)`;
    the gradient reaches the step `s` from the rounding error of in-range values and from the
    clipped ones, scaled by `grad_factor` (the paper's `1 / sqrt(N * qmax)`).

    Example:
        >>> import numpy as np
        >>> x = np.array([-1.0, 0.12, 0.5, 3.0], dtype="float32")
        >>> [round(float(v), 2) for v in learned_step_fake_quant(x, 0.25, -4, 4)]
        [-1.0, 0.0, 0.5, 1.0]
    """
    step = _scale_gradient(step, grad_factor)
    levels = _round_ste(ops.clip(x / step + zero_point, qmin, qmax))
    return (levels - zero_point) * step


@keras.saving.register_keras_serializable(package="tfcompress")
class WeightQuantizer:
    """Symmetric narrow-range fake quantization of a weight tensor (the TFLite int8 weight spec).

    The range is `max(|w|)`, per output channel when `per_channel` is true, recomputed from the
    weights at every step so the converter folds it into constants; or, with a learned step
    size, `qmax * step` (LSQ). With 2 bits the weights are ternary ({-s, 0, s}); with 1 bit they
    are binary (`sign(w) * mean(|w|)`, straight-through gradient; pruned zeros stay zero). The
    file stores the levels as int8 values in [-qmax, qmax] (one scale per channel), which every
    int8 runtime and the Edge TPU run.

    Args:
        num_bits: bits per weight, 1 to 8 (1 is binary, 2 ternary).
        per_channel: one scale per output channel (the last axis of the kernel given to `__call__`).

    Example:
        >>> import numpy as np
        >>> q = WeightQuantizer(num_bits=8, per_channel=True)
        >>> w = np.array([[0.5, -2.0], [0.25, 1.0]], dtype="float32")
        >>> np.allclose(keras.ops.convert_to_numpy(q(w)), w, atol=0.01)
        True
    """

    def __init__(self, num_bits: int = 8, per_channel: bool = True) -> None:
        if not isinstance(num_bits, int) or not 1 <= num_bits <= 8:
            raise ValueError(
                f"WeightQuantizer: num_bits must be an int in [1, 8] (1 is binary, 2 ternary); "
                f"got {num_bits!r}."
            )
        self.num_bits = num_bits
        self.per_channel = bool(per_channel)

    @property
    def qmax(self) -> int:
        """The largest integer level: 127 for 8 bits, 1 for ternary and binary."""
        return max(2 ** (self.num_bits - 1) - 1, 1)

    def _axes(self, kernel: Any) -> tuple[tuple[int, ...] | None, int | None]:
        if self.per_channel:
            return tuple(range(len(kernel.shape) - 1)), -1
        return None, None

    def initial_step(self, kernel: Any) -> Any:
        """The step `max(|w|) / qmax` the min/max scheme would use: where LSQ starts from."""
        axes, _ = self._axes(kernel)
        bound = ops.max(ops.abs(ops.convert_to_tensor(kernel)), axis=axes)
        return ops.maximum(bound, 1e-8) / self.qmax

    def __call__(self, kernel: Any, step: Any = None, training: bool = False) -> Any:
        """Fake-quantize `kernel`; `step` is the learned step size (LSQ), or None for min/max."""
        kernel = ops.convert_to_tensor(kernel)
        if self.per_channel and len(kernel.shape) > 4:
            # TensorFlow's per-channel fake quant (and its gradient) takes at most rank 4
            # (Conv3D kernels are rank 5): quantize the kernel as (values, channels).
            flat = ops.reshape(kernel, (-1, kernel.shape[-1]))
            return ops.reshape(self(flat, step, training), kernel.shape)
        axes, axis = self._axes(kernel)
        if self.num_bits == 1:
            step = ops.stop_gradient(ops.maximum(ops.mean(ops.abs(kernel), axis=axes), 1e-8))
            # straight-through sign; an exact zero (a pruned weight) stays zero
            kernel = kernel + ops.stop_gradient(ops.sign(kernel) * step - kernel)
        else:
            learned = step is not None
            if not learned:
                step = ops.stop_gradient(self.initial_step(kernel))
            if learned and training:
                size = kernel.shape[-1] if self.per_channel else 1
                factor = (prod(kernel.shape) // size * self.qmax) ** -0.5
                return learned_step_fake_quant(kernel, step, -self.qmax, self.qmax, 0.0, factor)
            if self.num_bits < 8:  # round to the low-bit grid with plain (constant-folded) ops
                kernel = learned_step_fake_quant(kernel, step, -self.qmax, self.qmax)
        # One int8 fake quant whose step is the low-bit step: the file stores the low-bit levels
        # as int8 values in [-qmax, qmax] (for 8 bits this is the usual max(|w|) range).
        bound = ops.maximum(step * 127.0, 1e-8)
        if training and axis is not None:
            return ops.cast(
                fake_quant_per_channel_for_training(kernel, -bound, bound, 8, True), kernel.dtype
            )
        return keras.quantizers.fake_quant_with_min_max_vars(
            kernel, -bound, bound, num_bits=8, narrow_range=True, axis=axis
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
        learned_step: learn the step size and the range's minimum by gradient descent (LSQ+)
            instead of tracking min/max. The first training batch initialises them; the step is
            stored as its logarithm, so Adam changes it by relative amounts.

    Example:
        >>> import numpy as np
        >>> q = ActivationQuantizer()
        >>> _ = q(np.linspace(-1, 3, 16, dtype="float32").reshape(2, 8), training=True)
        >>> [round(float(v), 2) for v in q.get_weights()[:2]]
        [-1.0, 3.0]
    """

    keeps_value_scale = True  # rounds its input, never rescales it (core.graph.inputs_rescaled)

    def __init__(
        self,
        num_bits: int = 8,
        decay: float = 0.999,
        fixed_range: tuple[float, float] | None = None,
        learned_step: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True  # a fake quant per value: a sequence mask passes through
        self.learned_step = bool(learned_step) and fixed_range is None
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
        def state(name: str, value: float, trainable: bool = False) -> Any:
            return self.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(value),
                trainable=trainable,
                aggregation="mean",
            )

        if self.learned_step:
            self.range_min = state("range_min", -6.0, trainable=True)
            self.log_step = state("log_step", float(np.log(12.0 / self._levels)), trainable=True)
        else:
            self.range_min = state("range_min", -6.0)
            self.range_max = state("range_max", 6.0)
        self.seen = state("seen", 0.0)

    @property
    def _levels(self) -> int:
        return 2**self.num_bits - 1 if self.num_bits == 8 else 2 * (2 ** (self.num_bits - 1) - 1)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if self.fixed_range is not None:
            low, high = self.fixed_range
            return keras.quantizers.fake_quant_with_min_max_vars(
                inputs, low, high, num_bits=self.num_bits
            )
        if self.learned_step:
            return self._learned_step_call(inputs, training)
        if training:
            self._update_range(inputs)
        low = ops.minimum(self.range_min, 0.0)
        high = ops.maximum(ops.maximum(self.range_max, 0.0), low + 1e-6)
        # 16-bit activations are symmetric in TFLite's int16x8 scheme.
        if self.num_bits == 16:
            bound = ops.maximum(-low, high)
            low, high = -bound, bound
        if training:
            return fake_quant_keeping_mask(inputs, low, high, self.num_bits, self.num_bits == 16)
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=self.num_bits, narrow_range=self.num_bits == 16
        )

    def _learned_step_call(self, inputs: Any, training: bool | None) -> Any:
        if training:
            self._initialise_step(inputs)
        step = ops.exp(self.log_step)
        if self.num_bits == 16:  # symmetric, narrow range: levels -32767..32767, zero point 0
            qmax = 2**15 - 1
            if training:
                factor = (prod(inputs.shape[1:]) * qmax) ** -0.5
                return learned_step_fake_quant(inputs, step, -qmax, qmax, 0.0, factor)
            return keras.quantizers.fake_quant_with_min_max_vars(
                inputs, -qmax * step, qmax * step, num_bits=16, narrow_range=True
            )
        qmax = self._levels  # asymmetric: levels 0..255 around an integer zero point
        if training:
            zero_point = ops.clip(_round_ste(-self.range_min / step), 0, qmax)
            factor = (prod(inputs.shape[1:]) * qmax) ** -0.5
            return learned_step_fake_quant(inputs, step, 0, qmax, zero_point, factor)
        zero_point = ops.clip(ops.floor(-self.range_min / step + 0.5), 0, qmax)
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, -zero_point * step, (qmax - zero_point) * step, num_bits=8
        )

    def _initialise_step(self, inputs: Any) -> None:
        """The first training batch sets the range, as the min/max scheme would."""
        low = ops.minimum(ops.stop_gradient(ops.cast(ops.min(inputs), "float32")), 0.0)
        high = ops.maximum(ops.stop_gradient(ops.cast(ops.max(inputs), "float32")), 0.0)
        low, high = global_batch_range(low, high)
        if self.num_bits == 16:
            low, high = -ops.maximum(-low, high), ops.maximum(-low, high)
        step = ops.maximum(high - low, 1e-6) / self._levels
        first = self.seen <= 0.0
        self.log_step.assign(ops.where(first, ops.log(step), self.log_step))
        self.range_min.assign(ops.where(first, low, self.range_min))
        self.seen.assign(1.0)

    def _update_range(self, inputs: Any) -> None:
        batch_min = ops.stop_gradient(ops.cast(ops.min(inputs), "float32"))
        batch_max = ops.stop_gradient(ops.cast(ops.max(inputs), "float32"))
        batch_min, batch_max = global_batch_range(batch_min, batch_max)
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
            "learned_step": self.learned_step,
        }


# -- tfmot-style quantizers: used by QuantizeConfig subclasses written the tfmot way ---------------


class Quantizer:
    """Base class of the quantizers a tfmot-style `QuantizeConfig` hands to the wrapper.

    A subclass implements `build(tensor_shape, name, layer)` (create its variables with
    `layer.add_weight` and return them in a dict), `__call__(inputs, training, weights, **kwargs)`
    (return the quantized tensor; `weights` is the dict `build` returned) and `get_config`.

    Example:
        >>> import numpy as np
        >>> class Clip(Quantizer):
        ...     def build(self, tensor_shape, name, layer):
        ...         return {}
        ...     def __call__(self, inputs, training, weights, **kwargs):
        ...         return keras.ops.clip(inputs, 0.0, 1.0)
        ...     def get_config(self):
        ...         return {}
        >>> [float(v) for v in Clip()(np.array([-1.0, 2.0]), False, {})]
        [0.0, 1.0]
    """

    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement build().")

    def __call__(self, inputs: Any, training: Any, weights: dict[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__().")

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement get_config().")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Quantizer:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()


class _RangeQuantizer(Quantizer):
    """Fake quantization between a stored (min, max); subclasses say how training updates it."""

    def __init__(self, num_bits: int, per_axis: bool, symmetric: bool, narrow_range: bool) -> None:
        if not isinstance(num_bits, int | np.integer) or not 2 <= int(num_bits) <= 16:
            raise ValueError(
                f"{type(self).__name__}: num_bits must be an int in [2, 16]; got {num_bits!r}."
            )
        self.num_bits = int(num_bits)
        self.per_axis = bool(per_axis)
        self.symmetric = bool(symmetric)
        self.narrow_range = bool(narrow_range)

    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, Any]:
        shape = (int(tensor_shape[-1]),) if self.per_axis else ()

        def variable(suffix: str, value: float) -> Any:
            return layer.add_weight(
                name=f"{name}_{suffix}",
                shape=shape,
                initializer=keras.initializers.Constant(value),
                trainable=False,
            )

        return {"min_var": variable("min", -6.0), "max_var": variable("max", 6.0)}

    def _batch_range(self, inputs: Any) -> tuple[Any, Any]:
        axes = tuple(range(len(inputs.shape) - 1)) if self.per_axis else None
        low = ops.stop_gradient(ops.min(inputs, axis=axes))
        high = ops.stop_gradient(ops.max(inputs, axis=axes))
        if self.symmetric:
            bound = ops.maximum(ops.abs(low), ops.abs(high))
            return -bound, bound
        return ops.minimum(low, 0.0), ops.maximum(high, 0.0)

    def _update(self, weights: dict[str, Any], low: Any, high: Any) -> None:
        raise NotImplementedError

    def __call__(self, inputs: Any, training: Any, weights: dict[str, Any], **kwargs: Any) -> Any:
        inputs = ops.convert_to_tensor(inputs)
        if training:
            self._update(weights, *global_batch_range(*self._batch_range(inputs)))
        low, high = weights["min_var"], weights["max_var"]
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs,
            low,
            high,
            num_bits=self.num_bits,
            narrow_range=self.narrow_range,
            axis=-1 if self.per_axis else None,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "num_bits": self.num_bits,
            "per_axis": self.per_axis,
            "symmetric": self.symmetric,
            "narrow_range": self.narrow_range,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class LastValueQuantizer(_RangeQuantizer):
    """Quantizes with the range of the latest training batch (tfmot's weight quantizer).

    Args:
        num_bits: bits of the grid, 2 to 16.
        per_axis: one range per slice of the last axis.
        symmetric: range `[-max|x|, max|x|]` instead of `[min(x, 0), max(x, 0)]`.
        narrow_range: leave out the lowest level (int8 weights use [-127, 127]).

    Example:
        >>> import numpy as np
        >>> layer = keras.layers.Layer()
        >>> q = LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
        >>> weights = q.build((2,), "w", layer)
        >>> out = q(np.array([-1.0, 0.5], "float32"), True, weights)
        >>> [round(float(v), 2) for v in out]
        [-1.0, 0.5]
    """

    def _update(self, weights: dict[str, Any], low: Any, high: Any) -> None:
        weights["min_var"].assign(low)
        weights["max_var"].assign(high)


class _TrackedRangeQuantizer(_RangeQuantizer):
    """A range quantizer that remembers whether it has seen a batch (its first sets the range)."""

    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, Any]:
        weights = super().build(tensor_shape, name, layer)
        weights["seen"] = layer.add_weight(
            name=f"{name}_seen", shape=(), initializer="zeros", trainable=False
        )
        return weights


@keras.saving.register_keras_serializable(package="tfcompress")
class MovingAverageQuantizer(_TrackedRangeQuantizer):
    """Quantizes with a range tracked by an exponential moving average (tfmot's activation one).

    The first training batch sets the range; later ones move it with decay 0.999.

    Example:
        >>> import numpy as np
        >>> layer = keras.layers.Layer()
        >>> q = MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
        ...                            narrow_range=False)
        >>> weights = q.build((), "act", layer)
        >>> _ = q(np.array([0.0, 3.0], "float32"), True, weights)
        >>> round(float(weights["max_var"].numpy()), 2)
        3.0
    """

    decay = 0.999

    def _update(self, weights: dict[str, Any], low: Any, high: Any) -> None:
        keep = ops.where(weights["seen"] > 0.0, self.decay, 0.0)
        weights["min_var"].assign(keep * weights["min_var"] + (1.0 - keep) * low)
        weights["max_var"].assign(keep * weights["max_var"] + (1.0 - keep) * high)
        weights["seen"].assign(1.0)


@keras.saving.register_keras_serializable(package="tfcompress")
class AllValuesQuantizer(_TrackedRangeQuantizer):
    """Quantizes with the smallest range holding every value seen in training.

    Example:
        >>> import numpy as np
        >>> layer = keras.layers.Layer()
        >>> q = AllValuesQuantizer(num_bits=8, per_axis=False, symmetric=False,
        ...                        narrow_range=False)
        >>> weights = q.build((), "act", layer)
        >>> _ = q(np.array([-2.0, 1.0], "float32"), True, weights)
        >>> _ = q(np.array([0.0, 4.0], "float32"), True, weights)
        >>> [float(weights[k].numpy()) for k in ("min_var", "max_var")]
        [-2.0, 4.0]
    """

    def _update(self, weights: dict[str, Any], low: Any, high: Any) -> None:
        first = weights["seen"] <= 0.0
        weights["min_var"].assign(ops.where(first, low, ops.minimum(weights["min_var"], low)))
        weights["max_var"].assign(ops.where(first, high, ops.maximum(weights["max_var"], high)))
        weights["seen"].assign(1.0)


@keras.saving.register_keras_serializable(package="tfcompress")
class FixedQuantizer(Quantizer):
    """Quantizes to a constant range `[init_min, init_max]`.

    Example:
        >>> import numpy as np
        >>> q = FixedQuantizer(num_bits=8, init_min=0.0, init_max=1.0)
        >>> [float(v) for v in q(np.array([-1.0, 2.0], "float32"), False, {})]
        [0.0, 1.0]
    """

    def __init__(
        self,
        num_bits: int = 8,
        init_min: float = -6.0,
        init_max: float = 6.0,
        narrow_range: bool = False,
    ) -> None:
        if not float(init_min) <= 0.0 < float(init_max):
            raise ValueError(
                f"FixedQuantizer: need init_min <= 0 < init_max; got ({init_min}, {init_max})."
            )
        self.num_bits = int(num_bits)
        self.init_min, self.init_max = float(init_min), float(init_max)
        self.narrow_range = bool(narrow_range)

    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, Any]:
        return {}

    def __call__(self, inputs: Any, training: Any, weights: dict[str, Any], **kwargs: Any) -> Any:
        return keras.quantizers.fake_quant_with_min_max_vars(
            ops.convert_to_tensor(inputs, "float32"),
            self.init_min,
            self.init_max,
            num_bits=self.num_bits,
            narrow_range=self.narrow_range,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "num_bits": self.num_bits,
            "init_min": self.init_min,
            "init_max": self.init_max,
            "narrow_range": self.narrow_range,
        }
