"""Masked sequences in full integer: Masking and the masked average computed in int8 ops."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.fixtures.pretrained import pretrained
from tests.outputs import inference
from tfcompress.converter import run_tflite
from tfcompress.quantization.integer_friendly import integer_friendly
from tfcompress.quantization.masking import (
    IntegerGlobalAveragePooling1D,
    IntegerMasking,
    StepMask,
)

L = keras.layers


def _padded(x: np.ndarray, seed: int, value: float = 0.0) -> np.ndarray:
    """`x` (batch, steps, features) with a random tail of each sequence set to `value`."""
    rng = np.random.default_rng(seed)
    x = x.copy()
    for row, length in enumerate(rng.integers(2, x.shape[1] + 1, size=len(x))):
        x[row, length:] = value
    return x


def _build() -> keras.Model:
    inputs = keras.Input((8, 8))
    pooled = L.GlobalAveragePooling1D()(L.Masking()(inputs))
    return keras.Model(inputs, L.Dense(10)(L.Dense(32, activation="relu")(pooled)))


@pytest.fixture(scope="session")
def padded_digits(digits):
    x_train = _padded(digits.x_train.reshape(-1, 8, 8)[:600], seed=1)
    x_test = _padded(digits.x_test.reshape(-1, 8, 8), seed=2)
    return x_train, digits.y_train[:600], x_test


@pytest.fixture(scope="session")
def masked_model(padded_digits):
    """Masking -> GlobalAveragePooling1D -> MLP, trained on digits rows with padded tails."""
    x, y, _ = padded_digits
    keras.utils.set_random_seed(0)
    model = _build()
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )

    def train() -> None:
        model.fit(x, y, epochs=8, batch_size=64, verbose=0)

    return pretrained("masking-pooled-mlp", model, train)


def _agreement(expected: np.ndarray, got: np.ndarray) -> float:
    return float((expected.argmax(-1) == got.argmax(-1)).mean())


@pytest.mark.parametrize("mask_value", [0.0, -1.0])
def test_integer_masking_gives_the_keras_masking_output_and_mask(mask_value, rng):
    x = _padded(rng.normal(size=(6, 5, 3)).astype("float32"), seed=0, value=mask_value)
    theirs = L.Masking(mask_value)
    ours = IntegerMasking(mask_value)
    np.testing.assert_allclose(ours(x), theirs(x))
    np.testing.assert_array_equal(
        np.asarray(ours.compute_mask(x)), np.asarray(theirs.compute_mask(x)).astype("float32")
    )


@pytest.mark.parametrize("mask_value", [0.0, -1.0])
def test_16_bit_mask_is_the_same_mask_and_round_trips_its_config(mask_value, rng):
    x = _padded(rng.normal(size=(6, 5, 3)).astype("float32"), seed=0, value=mask_value)
    eight, sixteen = IntegerMasking(mask_value), IntegerMasking(mask_value, activation_bits=16)
    np.testing.assert_array_equal(sixteen.compute_mask(x), eight.compute_mask(x))
    again = IntegerMasking.from_config(sixteen.get_config())
    assert again.activation_bits == again.step_mask.activation_bits == 16
    with pytest.raises(ValueError, match="'bad'.*activation_bits must be 8 or 16"):
        StepMask(activation_bits=4, name="bad")


def test_rewritten_masked_model_averages_only_the_unmasked_steps(masked_model, padded_digits):
    _, _, x_test = padded_digits
    rewritten = integer_friendly(masked_model)
    kinds = {type(layer) for layer in rewritten.layers}
    assert {IntegerMasking, IntegerGlobalAveragePooling1D} <= kinds
    np.testing.assert_allclose(
        inference(rewritten, x_test), inference(masked_model, x_test), atol=1e-5
    )


def test_masked_model_converts_to_int8_without_float_ops(masked_model, padded_digits):
    x, _, x_test = padded_digits
    flatbuffer = tfc.convert(masked_model, "int8", x[:100])
    assert tfc.inspect(flatbuffer).float_ops == []
    expected = inference(masked_model, x_test)
    assert _agreement(expected, run_tflite(flatbuffer, x_test)) >= 0.99


@pytest.fixture(scope="session")
def masked_qat(masked_model, padded_digits):
    x, y, _ = padded_digits
    qat = tfc.quantize_model(masked_model)
    qat.compile(
        keras.optimizers.Adam(1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
        run_eagerly=True,  # one step: tracing the unrolled steps costs more than running them
    )
    qat.fit(x[:200], y[:200], epochs=1, batch_size=200, verbose=0)
    return qat


def test_quantization_aware_masked_model_keeps_the_mask_through_its_ranges(
    masked_qat, masked_model, padded_digits
):
    _, _, x_test = padded_digits
    assert any(isinstance(layer, StepMask) for layer in masked_qat.layers)
    # the masked average survives quantize_model: padded steps stay out of the mean
    float_logits = inference(masked_model, x_test)
    assert _agreement(float_logits, inference(masked_qat, x_test)) >= 0.97


def test_quantization_aware_masked_model_converts_to_int8_and_agrees(masked_qat, padded_digits):
    x, _, x_test = padded_digits
    flatbuffer = tfc.convert(masked_qat, "int8", x[:100])
    assert tfc.inspect(flatbuffer).float_ops == []
    expected = inference(masked_qat, x_test)
    assert _agreement(expected, run_tflite(flatbuffer, x_test)) >= 0.99


def test_quantization_aware_masked_model_round_trips_through_keras_file(
    masked_qat, padded_digits, tmp_path
):
    _, _, x_test = padded_digits
    path = tmp_path / "masked.keras"
    masked_qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(inference(loaded, x_test), inference(masked_qat, x_test), atol=1e-5)
