"""Float models with LSTM/GRU/SimpleRNN/Bidirectional convert to full integer (post-training)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.fixtures.pretrained import pretrained
from tests.outputs import inference
from tfcompress.converter import run_tflite

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("recurrent-ptq")

L = keras.layers
# Below the 0.99 the issue aims at: these small, briefly trained models (3 epochs on 600 digits)
# keep an 8-bit hidden and cell state through 8 int8 steps; measured 0.98-0.99 here.
# benchmarks/recurrent_bench.py has the figures for trained models.
MIN_AGREEMENT = 0.95


def _build(kind: str) -> keras.Model:
    inputs = keras.Input((8, 8))
    if kind == "Bidirectional":
        hidden = L.Bidirectional(L.LSTM(8))(inputs)
    else:
        hidden = getattr(L, kind)(12)(inputs)
    return keras.Model(inputs, L.Dense(10)(hidden), name=kind.lower())


@pytest.fixture(scope="session")
def sequences(digits):
    return digits.x_train.reshape(-1, 8, 8), digits.x_test.reshape(-1, 8, 8)


@pytest.fixture(scope="session")
def trained(digits, sequences):
    models = {}

    def get(kind: str) -> keras.Model:
        if kind not in models:
            keras.utils.set_random_seed(0)
            model = _build(kind)
            model.compile(
                keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=False,
            )

            def train() -> None:
                model.fit(sequences[0][:600], digits.y_train[:600], epochs=3, verbose=0)

            models[kind] = pretrained(f"recurrent-ptq-{kind.lower()}", model, train)
        return models[kind]

    return get


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("LSTM", "int8"),
        ("GRU", "int8"),
        ("SimpleRNN", "int8"),
        ("Bidirectional", "edgetpu"),
        pytest.param("LSTM", "edgetpu", marks=pytest.mark.slow),
        pytest.param("GRU", "edgetpu", marks=pytest.mark.slow),
        pytest.param("SimpleRNN", "edgetpu", marks=pytest.mark.slow),
        pytest.param("Bidirectional", "int8", marks=pytest.mark.slow),
    ],
)
def test_recurrent_model_converts_to_full_integer_and_agrees(kind, mode, trained, sequences):
    model = trained(kind)
    flatbuffer = tfc.convert(model, mode, sequences[0][:100])
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    assert "FULLY_CONNECTED" in report.op_counts
    x_test = sequences[1]
    expected = inference(model, x_test).argmax(-1)
    agreement = float((run_tflite(flatbuffer, x_test).argmax(-1) == expected).mean())
    assert agreement >= MIN_AGREEMENT


def test_float_mode_keeps_the_keras_recurrent_loop():
    inputs = keras.Input((8, 8), batch_size=1)  # TF's float lowering needs a static batch
    model = keras.Model(inputs, L.LSTM(6)(inputs))
    report = tfc.inspect(tfc.convert(model, "float32"))
    assert "WHILE" in report.op_counts  # TF's own loop, not the unrolled steps
    assert "FULLY_CONNECTED" not in report.op_counts


@pytest.mark.parametrize("mode", ["float32", "float16"])
def test_float_mode_with_dynamic_batch_converts_by_unrolling(mode, rng):
    inputs = keras.Input((8, 8))  # batch None: TF's loop needs a static shape and fails
    model = keras.Model(inputs, L.GRU(6)(inputs))
    flatbuffer = tfc.convert(model, mode)
    assert "WHILE" not in tfc.inspect(flatbuffer).op_counts
    x = rng.normal(size=(4, 8, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(tfc.converter.run_tflite(flatbuffer, x), expected, atol=1e-2)


def test_static_batch_int8_conversion_does_not_crash(trained, sequences):
    """A batch-1 input used to crash TF's converter (SIGSEGV) on the fused GRU loop."""
    keras.utils.set_random_seed(0)  # untrained: unseeded weights put the error anywhere near 0.1
    inputs = keras.Input((8, 8), batch_size=1)
    gru = L.GRU(6)
    model = keras.Model(inputs, L.Dense(10)(gru(inputs)))
    flatbuffer = tfc.convert(model, "int8", sequences[0][:50])
    assert tfc.inspect(flatbuffer).float_ops == []
    got = run_tflite(flatbuffer, sequences[1][:20])
    np.testing.assert_allclose(got, inference(model, sequences[1][:20]), atol=0.1)


def test_variable_length_sequence_in_int8_says_what_to_do(sequences):
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, L.SimpleRNN(4)(inputs))
    with pytest.raises(tfc.ConversionError, match="sequence length must be static"):
        tfc.convert(model, "int8", sequences[0][:20])
