"""Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional) unrolled into ops with int8 kernels.

TF 2.21's converter lowers a Keras 3 recurrent layer to a `while` loop over a TensorList, which
full-integer conversion cannot handle: a None batch fails (`TensorListReserve ... requires
element_shape to be static`) and a static batch crashes the converter. The classes here compute
the same function as the Keras layer, with the same weights, as a static-length loop unrolled in
Python: per time step one FULLY_CONNECTED for the input, one for the state, ADD, SPLIT, LOGISTIC,
TANH and MUL. Every one of those ops has an int8 TFLite kernel, so the model converts to full
integer with no float op left.

Two ways in:

* `quantize_model` replaces every `LSTM`, `GRU`, `SimpleRNN` and `Bidirectional` of them by the
  quantization-aware version (`quantize_config` set): weights are fake-quantized per tensor and
  every tensor TFLite stores in int8 (projections, gate inputs, gate outputs, cell and hidden
  state) gets a range, fixed ones for sigmoid (1/256) and tanh (1/128) outputs. With
  `return_sequences=True` the output of every step gets one shared range: TFLite's PACK stores
  the whole sequence at one scale, so a range per step would not be what the file computes.
* `convert(model, "int8" | "int16x8" | "edgetpu", data)` of a float model swaps them for the float
  unrolled version before tracing (`unroll_recurrent`); the float modes keep TF's fused op.

The sequence length must be static (`keras.Input((steps, features))`); `stateful=True` is
refused with a message saying what to do. Masked steps (`Masking`, `Embedding(mask_zero=True)`)
hold the states as Keras does, computed `old + m * (new - old)` with the 0/1 mask `m` (int8 when it
comes from `IntegerMasking`, see `tfcompress.quantization.masking`).
Weights are quantized with the min/max scheme even when `learned_step` is set.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 4)).astype("float32")
    >>> lstm = keras.layers.LSTM(6)
    >>> reference = lstm(x)
    >>> unrolled = UnrolledLSTM.from_layer(lstm)
    >>> bool(np.allclose(unrolled(x), reference, atol=1e-5))
    True
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.core import compat, graph
from tfcompress.quantization.config import (
    PASSTHROUGH,
    QuantizeConfig,
    register_quantize_config,
)
from tfcompress.quantization.masking import as_weights
from tfcompress.quantization.quantizers import (
    ActivationQuantizer,
    WeightQuantizer,
    fake_quant_keeping_mask,
    global_batch_range,
)

L = keras.layers
_SIGMOID_RANGE = (0.0, 255.0 / 256.0)  # TFLite's int8 LOGISTIC output: scale 1/256, zero point -128
_TANH_RANGE = (-1.0, 127.0 / 128.0)  # TFLite's int8 TANH output: scale 1/128, zero point 0
_IGNORED_ARGS = ("unroll", "use_cudnn", "time_major", "implementation")


def _chunks(tensor: Any, count: int) -> list[Any]:
    """`tensor` cut into `count` equal parts on its last axis, by slicing: unlike SPLIT, a slice
    nobody reads (the forget gate at step 0) disappears instead of leaving a float SPLIT behind."""
    width = tensor.shape[-1] // count
    return [tensor[..., k * width : (k + 1) * width] for k in range(count)]


def _tracked(quantizer: ActivationQuantizer) -> bool:
    """True for a range tracked by min/max (not fixed, not learned by gradient descent)."""
    return quantizer.fixed_range is None and not quantizer.learned_step


def _fixed_range(activation: Any) -> tuple[float, float] | None:
    name = getattr(activation, "__name__", "")
    return {"sigmoid": _SIGMOID_RANGE, "tanh": _TANH_RANGE}.get(name)


class _UnrolledRecurrent(keras.layers.Layer):
    """Shared argument handling, weights, ranges and time loop of the unrolled layers."""

    keras_class: type = L.RNN
    gates = 1
    has_recurrent_activation = False

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        zero_output_for_mask: bool = False,
        masked: bool = False,
        shared_output_range: bool = True,
        quantize_config: QuantizeConfig | dict | None = None,
        **kwargs: Any,
    ) -> None:
        for name in _IGNORED_ARGS:
            kwargs.pop(name, None)  # how Keras runs the loop; the unrolled function is the same
        super().__init__(**kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"{type(self).__name__}: units must be a positive int; got {units!r}.")
        if stateful:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': stateful=True is not supported (the state "
                "would live outside the converted graph). Build the layer with stateful=False and "
                "pass the state as initial_state, or convert in mode='float32' or 'dynamic'."
            )
        if not (0.0 <= dropout < 1.0 and 0.0 <= recurrent_dropout < 1.0):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': dropout and recurrent_dropout must be in "
                f"[0, 1); got {dropout!r} and {recurrent_dropout!r}."
            )
        self.units = units
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.masked = bool(masked)
        self.shared_output_range = bool(shared_output_range)
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
            raise TypeError(
                f"{type(self).__name__} '{self.name}': quantize_config must be a QuantizeConfig "
                f"or None; got {quantize_config!r}."
            )
        self.quantize_config = quantize_config

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _UnrolledRecurrent:
        if "masked" in config and "shared_output_range" not in config:
            # saved before the shared output range: keep its range per step (and its variables)
            config = {**config, "shared_output_range": False}
        return super().from_config(config)

    @classmethod
    def from_layer(
        cls, layer: keras.layers.Layer, quantize_config: QuantizeConfig | None = None
    ) -> _UnrolledRecurrent:
        """The unrolled equivalent of a Keras recurrent `layer`, with its weights if it is built."""
        if type(layer) is not cls.keras_class:
            raise TypeError(
                f"{cls.__name__}.from_layer expects a keras.layers.{cls.keras_class.__name__}; "
                f"got {type(layer).__name__} '{getattr(layer, 'name', '?')}'."
            )
        unrolled = cls.from_config({**layer.get_config(), "quantize_config": quantize_config})
        if layer.built:
            build_config = layer.get_build_config()
            if build_config is not None:
                unrolled.build_from_config(build_config)
            unrolled.copy_weights_from(layer)
        return unrolled

    def copy_weights_from(self, layer: keras.layers.Layer) -> None:
        """Take the kernel, recurrent kernel and bias of the Keras layer this one replaces."""
        values = layer.get_weights()
        mine = self._cell_weights()
        if len(values) != len(mine):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': layer '{layer.name}' has {len(values)} "
                f"weights, this layer {len(mine)}; build both from the same config."
            )
        for variable, value in zip(mine, values, strict=True):
            variable.assign(value)

    def _cell_weights(self) -> list[Any]:
        return [w for w in (self.kernel, self.recurrent_kernel, self.bias) if w is not None]

    def _deployed_weights(self) -> list[Any]:
        """The kernel, recurrent kernel and bias the integer file stores (kernels fake-quantized)."""
        kernel, recurrent, bias = self._weights(training=False)
        return [ops.convert_to_numpy(w) for w in (kernel, recurrent, bias) if w is not None]

    def baked(self) -> _UnrolledRecurrent:
        """This layer in float, with the weights its integer file stores (no fake quant)."""
        plain = type(self).from_config({**self.get_config(), "quantize_config": None})
        plain.build_from_config(self.get_build_config())
        plain.set_weights(self._deployed_weights())
        return plain

    # -- build ------------------------------------------------------------------------------
    def _bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def _bias_initializer(self) -> Any:
        return self.bias_initializer

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        if len(sequences_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects (batch, steps, features) inputs; "
                f"got shape {tuple(sequences_shape)}."
            )
        if sequences_shape[1] is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': the sequence length must be static to "
                "unroll the recurrence for full-integer TFLite; got None. Give the model a fixed "
                "length (keras.Input((steps, features))), or convert in mode='float32', "
                "'dynamic' or 'float16', which keep TF's fused recurrent op."
            )
        features, width = sequences_shape[-1], self.gates * self.units

        def weight(name: str, shape: tuple, init: Any, reg: Any, constraint: Any) -> Any:
            return self.add_weight(
                name=name, shape=shape, initializer=init, regularizer=reg, constraint=constraint
            )

        self.kernel = weight(
            "kernel",
            (features, width),
            self.kernel_initializer,
            self.kernel_regularizer,
            self.kernel_constraint,
        )
        self.recurrent_kernel = weight(
            "recurrent_kernel",
            (self.units, width),
            self.recurrent_initializer,
            self.recurrent_regularizer,
            self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = weight(
                "bias",
                self._bias_shape(),
                self._bias_initializer(),
                self.bias_regularizer,
                self.bias_constraint,
            )
        self._ranges: dict[tuple[str, int], ActivationQuantizer] = {}
        self._shared: set[str] = set()  # names whose steps share one range (see below)
        self._batch_ranges: dict[str, tuple[Any, Any]] = {}
        self._step = 0
        self._weight_quantizer = None
        if self.quantize_config is not None:
            config = self.quantize_config
            self._weight_quantizer = WeightQuantizer(config.weight_bits, per_channel=False)
            # One range per step, as TFLite has (each step's tensors are its own): a range shared
            # by all steps is set mostly by the first ones, and clips the later, larger values.
            # The exception is the output of a layer returning sequences: PACK stores every
            # step's output at one scale, so those share one range, tracked over all steps.
            names = self._range_names()
            if self.masked:  # holding each state on masked steps: old + m * (new - old)
                for state in self._state_names():
                    for part in ("change", "masked_change", "held"):
                        names[f"{state}_{part}"] = None
            self._shared = set()
            if self.return_sequences and self.shared_output_range:
                # a masked layer outputs the held hidden state, or the new one if no mask comes
                self._shared = {"hidden", "hidden_held"} if self.masked else {"hidden"}
            shared: dict[str, ActivationQuantizer] = {}
            for step in range(sequences_shape[1]):
                for name, fixed in names.items():
                    if name in shared:
                        self._ranges[(name, step)] = shared[name]
                        continue
                    suffix = "" if name in self._shared else f"_{step}"
                    quantizer = ActivationQuantizer(
                        num_bits=config.activation_bits,
                        fixed_range=fixed,
                        learned_step=config.learned_step,
                        name=f"{self.name}_{name}{suffix}_quant",
                    )
                    quantizer.build(())  # scalar ranges, built now so a saved model loads them
                    self._ranges[(name, step)] = quantizer
                    if name in self._shared:
                        shared[name] = quantizer
            # tracked once each, in a stable order
            self._range_layers = list(dict.fromkeys(self._ranges.values()))
        self.built = True

    def _range_names(self) -> dict[str, tuple[float, float] | None]:
        """The int8 tensors of one step, with the fixed range of each (None: tracked)."""
        raise NotImplementedError

    # -- helpers for the step functions -----------------------------------------------------
    def _q(self, name: str, tensor: Any, training: Any) -> Any:
        """`tensor` with its int8 range applied when quantization-aware, else unchanged."""
        if not self._ranges:
            return tensor
        quantizer = self._ranges[(name, self._step)]
        if training and name in self._shared and _tracked(quantizer):
            return self._shared_step_quant(name, quantizer, tensor)
        return quantizer(tensor, training=training)

    def _shared_step_quant(self, name: str, quantizer: ActivationQuantizer, tensor: Any) -> Any:
        """Training: one step of a range shared by all steps. The step is quantized with the
        moving average moved toward the min/max of the steps so far (the first batch: that
        min/max itself, so no step is clipped); `_commit_shared_ranges` stores the min/max of
        all steps once the sequence is done, so one batch updates the average once."""
        low = ops.stop_gradient(ops.cast(ops.min(tensor), "float32"))
        high = ops.stop_gradient(ops.cast(ops.max(tensor), "float32"))
        if name in self._batch_ranges:
            seen_low, seen_high = self._batch_ranges[name]
            low, high = ops.minimum(low, seen_low), ops.maximum(high, seen_high)
        self._batch_ranges[name] = (low, high)
        keep = ops.where(quantizer.seen > 0.0, quantizer.decay, 0.0)
        low = ops.minimum(keep * quantizer.range_min + (1.0 - keep) * low, 0.0)
        high = ops.maximum(keep * quantizer.range_max + (1.0 - keep) * high, 0.0)
        high = ops.maximum(high, low + 1e-6)
        symmetric = quantizer.num_bits == 16  # TFLite's int16x8 activations are symmetric
        if symmetric:
            bound = ops.maximum(-low, high)
            low, high = -bound, bound
        return fake_quant_keeping_mask(tensor, low, high, quantizer.num_bits, symmetric)

    def _commit_shared_ranges(self) -> None:
        """Move each shared range's moving average toward the min/max of this batch's steps."""
        for name, (low, high) in self._batch_ranges.items():
            quantizer = self._ranges[(name, 0)]
            low, high = global_batch_range(low, high)
            keep = ops.where(quantizer.seen > 0.0, quantizer.decay, 0.0)
            quantizer.range_min.assign(keep * quantizer.range_min + (1.0 - keep) * low)
            quantizer.range_max.assign(keep * quantizer.range_max + (1.0 - keep) * high)
            quantizer.seen.assign(1.0)
        self._batch_ranges = {}

    def _weights(self, training: Any) -> tuple[Any, Any, Any]:
        kernel, recurrent = self.kernel, self.recurrent_kernel
        if self._weight_quantizer is not None:
            kernel = self._weight_quantizer(kernel, training=training)
            recurrent = self._weight_quantizer(recurrent, training=training)
        return kernel, recurrent, self.bias

    def _dropout_mask(self, like: Any, rate: float, training: Any) -> Any:
        if not training or rate == 0.0:
            return None
        return keras.random.dropout(ops.ones_like(like), rate, seed=self.seed_generator)

    # -- call -------------------------------------------------------------------------------
    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: bool | None = None,
    ) -> Any:
        outputs, states = self.run_steps(sequences, initial_state, mask, training)
        output = ops.stack(outputs, axis=1) if self.return_sequences else outputs[-1]
        return [output, *states] if self.return_state else output

    def run_steps(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: bool | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """The output of every step, in the order processed, and the final states."""
        if mask is not None and self._ranges and not self.masked:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' received a mask but was built without "
                "ranges for it. Build it with masked=True (quantize_model and unroll_recurrent "
                "do so for a model with Masking or Embedding(mask_zero=True))."
            )
        steps = ops.unstack(sequences, num=sequences.shape[1], axis=1)
        self._batch_ranges = {}
        keep = [None] * len(steps)
        if mask is not None:  # 0/1 per step; IntegerMasking's float mask needs no CAST
            weights = as_weights(mask, sequences.dtype)
            keep = [weights[:, t : t + 1] for t in range(len(steps))]
        if self.go_backwards:
            steps, keep = steps[::-1], keep[::-1]
        if initial_state is None:
            states = None
        else:
            states = (
                list(initial_state) if isinstance(initial_state, list | tuple) else [initial_state]
            )
        input_mask = self._dropout_mask(steps[0], self.dropout, training)
        state_mask = None
        kernel, recurrent, bias = self._weights(training)
        outputs = []
        for self._step, x in enumerate(steps):
            if input_mask is not None:
                x = x * input_mask
            hidden = None if states is None else states[0]
            if hidden is not None and training and self.recurrent_dropout:
                if state_mask is None:  # one mask for the whole sequence, as Keras does
                    state_mask = self._dropout_mask(hidden, self.recurrent_dropout, training)
                hidden = hidden * state_mask
            projected = self._q("input", ops.matmul(x, kernel) + self._input_bias(bias), training)
            new = self.step(projected, hidden, states, recurrent, bias, training)
            if keep[self._step] is not None:
                new = self._hold(new, states, keep[self._step], training)
            states = new
            output = states[0]
            if keep[self._step] is not None and self.zero_output_for_mask:
                output = output * keep[self._step]
            outputs.append(output)
        self._commit_shared_ranges()
        return outputs, states

    def _input_bias(self, bias: Any) -> Any:
        return 0.0 if bias is None else bias

    def _state_names(self) -> list[str]:
        return ["hidden"]

    def _hold(self, new: list, old: list | None, keep: Any, training: Any) -> list[Any]:
        """The states of a masked step: `new` where `keep` is 1, `old` (zeros at first) where 0,
        as `old + keep * (new - old)`: SUB, MUL and ADD, each with its int8 range."""
        held = []
        for k, (name, value) in enumerate(zip(self._state_names(), new, strict=True)):
            if old is None:
                held.append(self._q(f"{name}_held", keep * value, training))
                continue
            change = self._q(f"{name}_change", value - old[k], training)
            masked_change = self._q(f"{name}_masked_change", keep * change, training)
            held.append(self._q(f"{name}_held", old[k] + masked_change, training))
        return held

    def step(
        self,
        projected: Any,
        hidden: Any,
        states: list | None,
        recurrent: Any,
        bias: Any,
        training: Any,
    ) -> list[Any]:
        """The new states from the projected input and the previous states (None at step 0)."""
        raise NotImplementedError

    def compute_output_shape(self, sequences_shape: Any, initial_state_shape: Any = None) -> Any:
        batch, steps = sequences_shape[0], sequences_shape[1]
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [output] + [(batch, self.units)] * self._state_count()
        return output

    def _state_count(self) -> int:
        return 1

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        output_mask = mask if self.return_sequences else None  # as keras.layers.RNN does
        if self.return_state:
            return [output_mask] + [None] * self._state_count()
        return output_mask

    def get_config(self) -> dict[str, Any]:
        config = {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": keras.constraints.serialize(self.recurrent_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "zero_output_for_mask": self.zero_output_for_mask,
            "masked": self.masked,
            "shared_output_range": self.shared_output_range,
            "quantize_config": (
                None
                if self.quantize_config is None
                else keras.saving.serialize_keras_object(self.quantize_config)
            ),
        }
        if self.has_recurrent_activation:
            config["recurrent_activation"] = keras.activations.serialize(self.recurrent_activation)
        return config


@keras.saving.register_keras_serializable(package="tfcompress")
class UnrolledSimpleRNN(_UnrolledRecurrent):
    """`keras.layers.SimpleRNN` unrolled over its static number of steps.

    `h = activation(x @ kernel + bias + h @ recurrent_kernel)` at each step: FULLY_CONNECTED,
    ADD and the activation, all int8 in TFLite. Same arguments and weights as `SimpleRNN`, plus
    `quantize_config` (None: float; a `QuantizeConfig`: quantization-aware).

    Args:
        units: size of the hidden state.
        quantize_config: fake-quantize the weights (per tensor) and the int8 tensors of each step.
        **kwargs: the other arguments of `keras.layers.SimpleRNN`.

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 5, 3), dtype="float32")
        >>> tuple(UnrolledSimpleRNN(4, return_sequences=True)(x).shape)
        (2, 5, 4)
    """

    keras_class = L.SimpleRNN

    def __init__(self, units: int, activation: Any = "tanh", **kwargs: Any) -> None:
        kwargs.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, **kwargs)

    def _range_names(self) -> dict[str, tuple[float, float] | None]:
        return {
            "input": None,
            "recurrent": None,
            "preactivation": None,
            "hidden": _fixed_range(self.activation),
        }

    def step(self, projected, hidden, states, recurrent, bias, training):  # noqa: ANN001, ANN201
        total = projected
        if hidden is not None:
            total = self._q(
                "preactivation",
                projected + self._q("recurrent", ops.matmul(hidden, recurrent), training),
                training,
            )
        return [self._q("hidden", self.activation(total), training)]


@keras.saving.register_keras_serializable(package="tfcompress")
class UnrolledLSTM(_UnrolledRecurrent):
    """`keras.layers.LSTM` unrolled over its static number of steps.

    Each step: `z = x @ kernel + bias + h @ recurrent_kernel`, split into the input, forget,
    candidate and output gates (Keras's order), `c = f * c + i * g`, `h = o * activation(c)`.
    Same arguments and weights as `LSTM`, plus `quantize_config`.

    Args:
        units: size of the hidden and cell states.
        quantize_config: fake-quantize the weights (per tensor) and the int8 tensors of each step.
        **kwargs: the other arguments of `keras.layers.LSTM` (`unit_forget_bias` included).

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 5, 3), dtype="float32")
        >>> output, h, c = UnrolledLSTM(4, return_state=True)(x)
        >>> tuple(output.shape), tuple(c.shape)
        ((2, 4), (2, 4))
    """

    keras_class = L.LSTM
    gates = 4
    has_recurrent_activation = True

    def __init__(self, units: int, unit_forget_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_initializer(self) -> Any:
        if not self.unit_forget_bias:
            return self.bias_initializer
        units, base = self.units, self.bias_initializer

        def initializer(shape: Any, dtype: Any = None) -> Any:
            return ops.concatenate(
                [
                    base((units,), dtype=dtype),
                    ops.ones((units,), dtype=dtype),
                    base((units * 2,), dtype=dtype),
                ]
            )

        return initializer

    def _range_names(self) -> dict[str, tuple[float, float] | None]:
        gate = _fixed_range(self.recurrent_activation)
        return {
            "input": None,
            "recurrent": None,
            "gates": None,
            "input_gate": gate,
            "forget_gate": gate,
            "candidate": _fixed_range(self.activation),
            "output_gate": gate,
            "kept": None,
            "added": None,
            "cell": None,
            "cell_activation": _fixed_range(self.activation),
            "hidden": None,
        }

    def _state_count(self) -> int:
        return 2

    def _state_names(self) -> list[str]:
        return ["hidden", "cell"]

    def step(self, projected, hidden, states, recurrent, bias, training):  # noqa: ANN001, ANN201
        q = self._q
        gates = projected
        if hidden is not None:
            recurrent_part = q("recurrent", ops.matmul(hidden, recurrent), training)
            gates = q("gates", projected + recurrent_part, training)
        i, f, g, o = _chunks(gates, 4)
        i = q("input_gate", self.recurrent_activation(i), training)
        g = q("candidate", self.activation(g), training)
        o = q("output_gate", self.recurrent_activation(o), training)
        added = q("added", i * g, training)
        if states is None:
            cell = added  # the initial cell state is zero
        else:
            f = q("forget_gate", self.recurrent_activation(f), training)
            cell = q("cell", q("kept", f * states[1], training) + added, training)
        h = q("hidden", o * q("cell_activation", self.activation(cell), training), training)
        return [h, cell]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


@keras.saving.register_keras_serializable(package="tfcompress")
class UnrolledGRU(_UnrolledRecurrent):
    """`keras.layers.GRU` unrolled over its static number of steps (`reset_after` True or False).

    Each step computes the update gate `z`, the reset gate `r` and the candidate `hh` as Keras
    does, then `h = hh + z * (h - hh)` (Keras's `z * h + (1 - z) * hh`, without a constant 1).
    Same arguments and weights as `GRU`, plus `quantize_config`.

    Args:
        units: size of the hidden state.
        reset_after: apply the reset gate after the recurrent projection (Keras's default).
        quantize_config: fake-quantize the weights (per tensor) and the int8 tensors of each step.
        **kwargs: the other arguments of `keras.layers.GRU`.

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 5, 3), dtype="float32")
        >>> tuple(UnrolledGRU(4, reset_after=False)(x).shape)
        (2, 4)
    """

    keras_class = L.GRU
    gates = 3
    has_recurrent_activation = True

    def __init__(self, units: int, reset_after: bool = True, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)

    def _bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self, bias: Any) -> Any:
        if bias is None:
            return 0.0
        return bias[0] if self.reset_after else bias

    def _range_names(self) -> dict[str, tuple[float, float] | None]:
        gate = _fixed_range(self.recurrent_activation)
        return {
            "input": None,
            "recurrent": None,
            "update_sum": None,
            "reset_sum": None,
            "update_gate": gate,
            "reset_gate": gate,
            "reset_state": None,
            "reset_projection": None,
            "candidate_sum": None,
            "candidate": _fixed_range(self.activation),
            "difference": None,
            "gated": None,
            "hidden": None,
        }

    def step(self, projected, hidden, states, recurrent, bias, training):  # noqa: ANN001, ANN201
        q, units = self._q, self.units
        x_z, x_r, x_h = _chunks(projected, 3)
        recurrent_bias = bias[1] if (bias is not None and self.reset_after) else None
        if hidden is None:
            z_sum, r_sum = x_z, x_r
            if recurrent_bias is not None:
                b_z, b_r, b_h = _chunks(recurrent_bias, 3)
                z_sum = q("update_sum", x_z + b_z, training)
                r_sum = q("reset_sum", x_r + b_r, training)
        elif self.reset_after:
            r_all = ops.matmul(hidden, recurrent)
            if recurrent_bias is not None:
                r_all = r_all + recurrent_bias
            h_z, h_r, h_h = _chunks(q("recurrent", r_all, training), 3)
            z_sum = q("update_sum", x_z + h_z, training)
            r_sum = q("reset_sum", x_r + h_r, training)
        else:
            r_zr = q("recurrent", ops.matmul(hidden, recurrent[:, : 2 * units]), training)
            h_z, h_r = _chunks(r_zr, 2)
            z_sum = q("update_sum", x_z + h_z, training)
            r_sum = q("reset_sum", x_r + h_r, training)
        z = q("update_gate", self.recurrent_activation(z_sum), training)
        candidate_sum = x_h
        if hidden is not None or recurrent_bias is not None:
            r = q("reset_gate", self.recurrent_activation(r_sum), training)
            if self.reset_after:
                reset_part = q("reset_state", r * (b_h if hidden is None else h_h), training)
            elif hidden is not None:
                reset_hidden = q("reset_state", r * hidden, training)
                reset_part = q(
                    "reset_projection",
                    ops.matmul(reset_hidden, recurrent[:, 2 * units :]),
                    training,
                )
            if hidden is not None or self.reset_after:
                candidate_sum = q("candidate_sum", x_h + reset_part, training)
        hh = q("candidate", self.activation(candidate_sum), training)
        if hidden is None:  # h0 = 0: h = (1 - z) * hh = hh - z * hh
            new = q("hidden", hh - q("gated", z * hh, training), training)
        else:
            difference = q("difference", hidden - hh, training)
            new = q("hidden", hh + q("gated", z * difference, training), training)
        return [new]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reset_after": self.reset_after}


_UNROLLED: dict[type, type] = {
    L.LSTM: UnrolledLSTM,
    L.GRU: UnrolledGRU,
    L.SimpleRNN: UnrolledSimpleRNN,
}
_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _unrolled_config(layer: Any, quantize_config: QuantizeConfig | None) -> _UnrolledRecurrent:
    """An unrolled layer (unbuilt) from a Keras recurrent layer, an unrolled one or a config."""
    if isinstance(layer, dict):
        layer = keras.saving.deserialize_keras_object(layer)
    if isinstance(layer, _UnrolledRecurrent):
        config = layer.get_config()
        return type(layer).from_config({**config, "quantize_config": quantize_config})
    klass = _UNROLLED.get(type(layer))
    if klass is None:
        raise TypeError(
            f"UnrolledBidirectional: cannot unroll '{getattr(layer, 'name', layer)}' "
            f"({type(layer).__name__}); only LSTM, GRU and SimpleRNN are supported. Convert the "
            "model in mode='float32', 'dynamic' or 'float16' instead."
        )
    return klass.from_config({**layer.get_config(), "quantize_config": quantize_config})


@keras.saving.register_keras_serializable(package="tfcompress")
class UnrolledBidirectional(keras.layers.Layer):
    """`keras.layers.Bidirectional` of an unrolled LSTM, GRU or SimpleRNN.

    The forward layer reads the sequence in order, the backward one in reverse; with
    `return_sequences` the backward outputs are stacked back in time order (no REVERSE op). The
    two are merged as Keras does ("concat", "sum", "mul", "ave" or None for a list). When
    quantization-aware, the merged output gets its own int8 range.

    Args:
        layer: the forward layer: a Keras `LSTM`/`GRU`/`SimpleRNN`, an unrolled one, or a
            serialized one (Keras's Bidirectional config calls it "layer").
        merge_mode: how to combine the two directions.
        backward_layer: the backward layer (same kinds); by default `layer`'s config with
            `go_backwards` flipped.
        quantize_config: None (float) or the `QuantizeConfig` of both directions.
        **kwargs: base layer arguments (name, dtype...).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
        >>> keras_layer = keras.layers.Bidirectional(keras.layers.GRU(4), merge_mode="sum")
        >>> reference = keras_layer(x)
        >>> ours = UnrolledBidirectional.from_layer(keras_layer)
        >>> bool(np.allclose(ours(x), reference, atol=1e-5))
        True
    """

    def __init__(
        self,
        layer: Any,
        merge_mode: str | None = "concat",
        backward_layer: Any = None,
        quantize_config: QuantizeConfig | dict | None = None,
        weights: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"UnrolledBidirectional '{self.name}': merge_mode must be one of {_MERGE_MODES}; "
                f"got {merge_mode!r}."
            )
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        self.quantize_config = quantize_config
        self.merge_mode = merge_mode
        self.forward_layer = _unrolled_config(layer, quantize_config)
        if backward_layer is None:
            config = self.forward_layer.get_config()
            config.update(
                go_backwards=not config["go_backwards"], name=f"backward_{config['name']}"
            )
            backward_layer = type(self.forward_layer).from_config(config)
        self.backward_layer = _unrolled_config(backward_layer, quantize_config)
        self.return_sequences = self.forward_layer.return_sequences
        self.return_state = self.forward_layer.return_state
        self._merge_range = None

    @classmethod
    def from_layer(
        cls, layer: keras.layers.Bidirectional, quantize_config: QuantizeConfig | None = None
    ) -> UnrolledBidirectional:
        """The unrolled equivalent of a Keras `Bidirectional`, with its weights if it is built."""
        if not isinstance(layer, L.Bidirectional):
            raise TypeError(
                f"UnrolledBidirectional.from_layer expects a keras.layers.Bidirectional; got "
                f"{type(layer).__name__} '{getattr(layer, 'name', '?')}'."
            )
        unrolled = cls.from_config({**layer.get_config(), "quantize_config": quantize_config})
        if layer.built:
            unrolled.build(layer.forward_layer.get_build_config()["input_shape"])
            unrolled.copy_weights_from(layer)
        return unrolled

    def baked(self) -> UnrolledBidirectional:
        """Both directions in float, with the weights the integer file stores (no fake quant)."""
        plain = type(self).from_config({**self.get_config(), "quantize_config": None})
        plain.build(self.forward_layer.get_build_config()["input_shape"])
        plain.forward_layer.set_weights(self.forward_layer._deployed_weights())
        plain.backward_layer.set_weights(self.backward_layer._deployed_weights())
        return plain

    def copy_weights_from(self, layer: keras.layers.Bidirectional) -> None:
        """Take both directions' weights from the Keras `Bidirectional` this one replaces."""
        self.forward_layer.copy_weights_from(layer.forward_layer)
        self.backward_layer.copy_weights_from(layer.backward_layer)

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        self.forward_layer.build(sequences_shape)
        self.backward_layer.build(sequences_shape)
        if self.quantize_config is not None and self.merge_mode is not None:
            self._merge_range = ActivationQuantizer(
                num_bits=self.quantize_config.activation_bits,
                learned_step=self.quantize_config.learned_step,
                name=f"{self.name}_merge_quant",
            )
            self._merge_range.build(())
        self.built = True

    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: bool | None = None,
    ) -> Any:
        forward_state = backward_state = None
        if initial_state is not None:
            half = len(initial_state) // 2
            forward_state, backward_state = initial_state[:half], initial_state[half:]
        forward, forward_states = self.forward_layer.run_steps(
            sequences, forward_state, mask, training
        )
        backward, backward_states = self.backward_layer.run_steps(
            sequences, backward_state, mask, training
        )
        if self.return_sequences:
            forward_out = ops.stack(forward, axis=1)
            backward_out = ops.stack(backward[::-1], axis=1)  # back in time order
        else:
            forward_out, backward_out = forward[-1], backward[-1]
        output = self._merge(forward_out, backward_out, training)
        if not self.return_state:
            return output
        head = output if isinstance(output, list) else [output]
        return [*head, *forward_states, *backward_states]

    def _merge(self, forward: Any, backward: Any, training: Any) -> Any:
        if self.merge_mode is None:
            return [forward, backward]
        if self.merge_mode == "concat":
            merged = ops.concatenate([forward, backward], axis=-1)
        elif self.merge_mode == "sum":
            merged = forward + backward
        elif self.merge_mode == "mul":
            merged = forward * backward
        else:
            merged = (forward + backward) * 0.5
        if self._merge_range is None:
            return merged
        return self._merge_range(merged, training=training)

    def compute_output_shape(self, sequences_shape: Any, initial_state_shape: Any = None) -> Any:
        forward = self.forward_layer.compute_output_shape(sequences_shape)
        output, states = (forward[0], forward[1:]) if self.return_state else (forward, [])
        if self.merge_mode == "concat":
            output = (*output[:-1], output[-1] * 2)
        outputs = [output, output] if self.merge_mode is None else [output]
        if self.return_state:
            return outputs + list(states) * 2
        return outputs[0] if self.merge_mode is not None else outputs

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return None

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.forward_layer),
            "backward_layer": keras.saving.serialize_keras_object(self.backward_layer),
            "merge_mode": self.merge_mode,
            "quantize_config": (
                None
                if self.quantize_config is None
                else keras.saving.serialize_keras_object(self.quantize_config)
            ),
        }


# keras.layers.RNN around one of these cells computes what the matching layer computes
_CELL_LAYERS: dict[type, type] = {
    L.LSTMCell: L.LSTM,
    L.GRUCell: L.GRU,
    L.SimpleRNNCell: L.SimpleRNN,
}


def _is_cell_rnn(layer: Any) -> bool:
    return type(layer) is L.RNN and type(layer.cell) in _CELL_LAYERS


def as_recurrent_layer(layer: Any) -> Any:
    """`keras.layers.RNN(LSTMCell/GRUCell/SimpleRNNCell)` as the equivalent LSTM/GRU/SimpleRNN
    layer (same weights); any other layer unchanged.

    Example:
        >>> rnn = keras.layers.RNN(keras.layers.GRUCell(3))
        >>> type(as_recurrent_layer(rnn)).__name__
        'GRU'
    """
    if not _is_cell_rnn(layer):
        return layer
    cell_config = {
        key: value
        for key, value in layer.cell.get_config().items()
        if key not in ("name", "trainable", "dtype")
    }
    flags = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll")
    equivalent = _CELL_LAYERS[type(layer.cell)](
        **cell_config, **{flag: getattr(layer, flag) for flag in flags}, name=layer.name
    )
    return graph.built_like(equivalent, layer)


def unrolled_layer(
    layer: keras.layers.Layer, quantize_config: QuantizeConfig | None = None
) -> keras.layers.Layer | None:
    """The unrolled equivalent of a Keras recurrent `layer` (with its weights), or None.

    Example:
        >>> type(unrolled_layer(keras.layers.GRU(3))).__name__
        'UnrolledGRU'
        >>> unrolled_layer(keras.layers.Dense(3)) is None
        True
    """
    if isinstance(layer, L.Bidirectional) and type(layer.forward_layer) in _UNROLLED:
        return UnrolledBidirectional.from_layer(layer, quantize_config)
    layer = as_recurrent_layer(layer)
    klass = _UNROLLED.get(type(layer))
    return None if klass is None else klass.from_layer(layer, quantize_config)


def has_recurrent_layers(model: Any) -> bool:
    """True when `model` (or a model nested in it) holds a Keras LSTM, GRU, SimpleRNN or
    Bidirectional layer that `unroll_recurrent` replaces.

    Example:
        >>> model = keras.Sequential([keras.Input((4, 2)), keras.layers.SimpleRNN(3)])
        >>> has_recurrent_layers(model)
        True
    """
    for layer in getattr(model, "layers", None) or []:
        if type(layer) in _UNROLLED or isinstance(layer, L.Bidirectional) or _is_cell_rnn(layer):
            return True
        if isinstance(layer, keras.Model) and has_recurrent_layers(layer):
            return True
    return False


def unroll_recurrent(model: keras.Model) -> keras.Model:
    """A copy of `model` whose LSTM, GRU, SimpleRNN and Bidirectional layers are unrolled.

    The copy computes the same function with the same weights, in ops that convert to full
    integer TFLite (`convert` does this by itself in the integer modes). Nested functional and
    Sequential models are rewritten too; the original model is not modified.

    Args:
        model: a built functional or Sequential Keras 3 model with static sequence lengths.

    Returns:
        The rewritten model (float; quantization-aware layers come from `quantize_model`).

    Example:
        >>> import numpy as np
        >>> inputs = keras.Input((8, 4))
        >>> model = keras.Model(inputs, keras.layers.LSTM(5)(inputs))
        >>> flat = unroll_recurrent(model)
        >>> type(flat.layers[1]).__name__
        'UnrolledLSTM'
        >>> x = np.random.default_rng(0).normal(size=(3, 8, 4)).astype("float32")
        >>> bool(np.allclose(flat(x), model(x), atol=1e-5))
        True
    """
    graph.check_model(
        model,
        "unroll_recurrent",
        ", or convert it in mode='float32', 'dynamic' or 'float16' (which keep TF's fused op)",
    )

    masked = any(
        isinstance(layer, L.Masking) or getattr(layer, "mask_zero", False)
        for layer in compat.nested_layers(model)
    )

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, keras.Model) and has_recurrent_layers(layer):
            return unroll_recurrent(layer)
        unrolled = unrolled_layer(layer)
        if masked and unrolled is not None:  # quantization-aware copies get ranges for the mask
            for part in (
                getattr(unrolled, "forward_layer", None),
                getattr(unrolled, "backward_layer", None),
                unrolled,
            ):
                if isinstance(part, _UnrolledRecurrent):
                    part.masked = True
        return unrolled

    return graph.rebuild(model, replace)


for _cls in (*_UNROLLED, L.Bidirectional, *_UNROLLED.values(), UnrolledBidirectional):
    # quantize_model swaps these for quantization-aware unrolled layers whose outputs already
    # carry their int8 range (the hidden state's, or the merge's for Bidirectional)
    register_quantize_config(_cls, QuantizeConfig(role=PASSTHROUGH))
