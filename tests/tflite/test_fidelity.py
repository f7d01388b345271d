"""`fidelity.sqnr_gain`: a file's SQNR gain over another, and whether the rows confirm it;
`fidelity.output_kinds`: how each output of a model is judged."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcompress.tflite.fidelity import output_kinds, sqnr_gain


def _rows(count: int = 64) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, 10))


def test_a_gain_on_every_row_is_confirmed():
    reference = _rows()
    noise = np.random.default_rng(1).normal(size=reference.shape)
    gain, low = sqnr_gain([reference], [reference + 0.05 * noise], [reference + 0.1 * noise])
    assert gain == pytest.approx(20 * np.log10(2), abs=1e-6)  # half the noise: 6.02 dB
    assert 0 < low < gain


def test_a_gain_that_rests_on_one_row_is_not_confirmed():
    reference = _rows()
    noise = 0.1 * np.random.default_rng(1).normal(size=reference.shape)
    baseline = reference + noise
    baseline[0] += 3.0  # the file without the step is far off on one row only
    better_on_one_row = reference + 1.02 * noise  # and a little worse on all the others
    gain, low = sqnr_gain([reference], [better_on_one_row], [baseline])
    assert gain > 0 and low < 0


def test_the_gain_is_the_mean_over_the_outputs_and_exact_files_gain_nothing():
    reference = _rows()
    noise = np.random.default_rng(1).normal(size=reference.shape)
    gain, _ = sqnr_gain(
        [reference, reference],
        [reference, reference + 0.05 * noise],
        [reference, reference + 0.1 * noise],
    )
    assert gain == pytest.approx(10 * np.log10(2), abs=1e-6)  # (0 + 6.02) / 2
    assert sqnr_gain([reference], [reference], [reference]) == (0.0, 0.0)


def test_the_bound_is_the_same_on_every_call():
    reference = _rows()
    noise = np.random.default_rng(1).normal(size=reference.shape)
    args = ([reference], [reference + 0.09 * noise], [reference + 0.1 * noise])
    assert sqnr_gain(*args) == sqnr_gain(*args)


def test_a_confidence_outside_zero_and_one_is_refused():
    reference = _rows()
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        sqnr_gain([reference], [reference], [reference], confidence=1.5)


def _detector(compiled: bool = False) -> keras.Model:
    """A face detector's three heads, as MTCNN's ONet: class scores, box and landmarks."""
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    face = keras.layers.Softmax(name="face")(keras.layers.Dense(2)(hidden))
    box = keras.layers.Dense(4, name="box")(hidden)
    landmarks = keras.layers.Dense(10, name="landmarks")(hidden)
    model = keras.Model(inputs, [box, landmarks, face])
    if compiled:  # losses say otherwise: the box is trained as classes here
        model.compile(loss=["categorical_crossentropy", "mse", "categorical_crossentropy"])
    return model


def test_linear_heads_beside_a_probability_head_are_values():
    assert output_kinds(_detector()) == ["values", "values", "classes"]


def test_a_compiled_loss_decides_over_the_guess():
    assert output_kinds(_detector(compiled=True)) == ["classes", "values", "classes"]


def test_linear_outputs_without_a_probability_head_are_logits():
    inputs = keras.Input((8,))
    two_tasks = keras.Model(inputs, [keras.layers.Dense(5)(inputs), keras.layers.Dense(3)(inputs)])
    assert output_kinds(two_tasks) == ["classes", "classes"]
    sigmoid = keras.layers.Dense(3, activation="sigmoid")(inputs)
    assert output_kinds(keras.Model(inputs, [keras.layers.Dense(4)(inputs), sigmoid])) == [
        "values",
        "classes",
    ]
