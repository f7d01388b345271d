"""Pruning schedules: pure functions of the training step returning (update now?, sparsity)."""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def plain_number(value: Any) -> Any:
    """`value` as a Python int/float when it is a numpy scalar or 0-d array; otherwise unchanged.

    tfmot's guides pass `np.int32` steps and `np.float32` sparsities; they mean plain numbers.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def is_integer(value: Any) -> bool:
    value = plain_number(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    value = plain_number(value)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_sparsity(name: str, value: Any) -> float:
    if not is_real(value) or not 0.0 <= plain_number(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}.")
    return float(plain_number(value))


def _check_step(name: str, value: Any, minimum: int) -> int:
    if not is_integer(value) or plain_number(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(plain_number(value))


class PruningSchedule:
    """Base class: `schedule(step)` returns `(should_update, sparsity)` as tensors.

    Subclasses are pure: the result depends on `step` only, so a model resumed mid-schedule
    prunes exactly as if it had never stopped.
    """

    begin_step: int
    end_step: int
    frequency: int

    def _should_update(self, step: Any) -> Any:
        step = tf.cast(step, tf.int64)
        after_begin = step >= self.begin_step
        before_end = tf.constant(True) if self.end_step == -1 else step <= self.end_step
        on_frequency = tf.math.floormod(step - self.begin_step, self.frequency) == 0
        # the last step always updates, so the final sparsity is reached exactly
        at_end = tf.constant(False) if self.end_step == -1 else step == self.end_step
        return after_begin & before_end & (on_frequency | at_end)

    def sparsity_at(self, step: int) -> float:
        """The target sparsity at `step`, as a Python float (for reports and plots)."""
        return round(float(self(step)[1]), 6)  # float32 inside the graph

    def __call__(self, step: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PruningSchedule:
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()


@keras.saving.register_keras_serializable(package="tfcompress")
class ConstantSparsity(PruningSchedule):
    """Prune to `target_sparsity` at `begin_step`, then re-prune every `frequency` steps.

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin_step: first step that prunes.
        end_step: last step that prunes; -1 prunes until training ends.
        frequency: prune every `frequency` steps after `begin_step`.

    Example:
        >>> schedule = ConstantSparsity(0.5, begin_step=10, frequency=5)
        >>> [bool(schedule(step)[0]) for step in (9, 10, 12, 15)]
        [False, True, False, True]
        >>> schedule.sparsity_at(10)
        0.5
    """

    def __init__(
        self, target_sparsity: float, begin_step: int, end_step: int = -1, frequency: int = 100
    ):
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.begin_step = _check_step("begin_step", begin_step, 0)
        self.end_step = _check_step("end_step", end_step, -1)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(
                f"end_step ({end_step}) must be >= begin_step ({begin_step}), or -1 to prune "
                "until training ends."
            )
        self.frequency = _check_step("frequency", frequency, 1)

    def __call__(self, step: Any) -> tuple[Any, Any]:
        return self._should_update(step), tf.constant(self.target_sparsity, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` along a polynomial curve.

    `s(t) = final + (initial - final) * (1 - p) ** power` with `p = (t - begin) / (end - begin)`
    clipped to [0, 1]: fast at first, gentle near the end, where the network has less to lose.
    The mask is updated every `frequency` steps in [begin_step, end_step] and at end_step.

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1).
        final_sparsity: sparsity from `end_step` on, in [initial_sparsity, 1).
        begin_step: first step that prunes.
        end_step: step where `final_sparsity` is reached (> begin_step).
        power: exponent of the curve (> 0; 1 is linear).
        frequency: prune every `frequency` steps.

    Example:
        >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
        >>> round(schedule.sparsity_at(50), 3), schedule.sparsity_at(100)
        (0.7, 0.8)
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        if self.final_sparsity < self.initial_sparsity:
            raise ValueError(
                f"final_sparsity ({final_sparsity}) must be >= initial_sparsity "
                f"({initial_sparsity}): a schedule only removes weights."
            )
        self.begin_step = _check_step("begin_step", begin_step, 0)
        self.end_step = _check_step("end_step", end_step, 0)
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({end_step}) must be > begin_step ({begin_step}).")
        if not is_real(power) or plain_number(power) <= 0:
            raise ValueError(f"power must be a number > 0; got {power!r}.")
        self.power = plain_number(power)
        self.frequency = _check_step("frequency", frequency, 1)

    def __call__(self, step: Any) -> tuple[Any, Any]:
        progress = (tf.cast(step, tf.float32) - self.begin_step) / (self.end_step - self.begin_step)
        progress = tf.clip_by_value(progress, 0.0, 1.0)
        sparsity = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * tf.pow(
            1.0 - progress, float(self.power)
        )
        return self._should_update(step), sparsity

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
