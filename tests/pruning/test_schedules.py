"""Schedules: pure functions of the step, validated, serializable."""

from __future__ import annotations

import keras
import pytest

from tfcompress.pruning import ConstantSparsity, PolynomialDecay


def test_constant_sparsity_updates_on_frequency_between_begin_and_end() -> None:
    schedule = ConstantSparsity(0.6, begin_step=4, end_step=12, frequency=4)
    updates = [step for step in range(20) if bool(schedule(step)[0])]
    assert updates == [4, 8, 12]
    assert schedule.sparsity_at(0) == pytest.approx(0.6)


def test_polynomial_decay_reaches_final_sparsity_at_end_step_even_off_frequency() -> None:
    schedule = PolynomialDecay(0.1, 0.8, begin_step=0, end_step=25, power=3, frequency=10)
    updates = [step for step in range(40) if bool(schedule(step)[0])]
    assert updates == [0, 10, 20, 25]
    assert schedule.sparsity_at(0) == pytest.approx(0.1)
    assert schedule.sparsity_at(25) == pytest.approx(0.8)
    assert schedule.sparsity_at(100) == pytest.approx(0.8)
    values = [schedule.sparsity_at(step) for step in range(0, 26, 5)]
    assert values == sorted(values)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PolynomialDecay(0.5, 0.2, 0, 10), "final_sparsity"),
        (lambda: PolynomialDecay(0.0, 0.5, 10, 5), "end_step"),
        (lambda: PolynomialDecay(0.0, 1.0, 0, 10), "final_sparsity"),
        (lambda: PolynomialDecay(-0.1, 0.5, 0, 10), "initial_sparsity"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, power=0), "power"),
        (lambda: ConstantSparsity(1.0, 0), "target_sparsity"),
        (lambda: ConstantSparsity(0.5, 10, end_step=5), "end_step"),
        (lambda: ConstantSparsity(0.5, -1), "begin_step"),
        (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency"),
    ],
)
def test_invalid_schedule_raises_naming_the_argument(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "schedule",
    [ConstantSparsity(0.5, 3, 30, 2), PolynomialDecay(0.0, 0.8, 0, 100, power=2, frequency=7)],
)
def test_schedule_round_trips_through_keras_serialization(schedule) -> None:
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored == schedule
    assert [restored.sparsity_at(s) for s in range(0, 40, 9)] == [
        schedule.sparsity_at(s) for s in range(0, 40, 9)
    ]
