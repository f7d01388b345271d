"""A model with fake-quant ops converts to full int8 without representative data."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite


class _FixedRangeFakeQuant(keras.layers.Layer):
    """Fake quant with a fixed range, as a quantization-aware model has after training."""

    def __init__(self, low: float, high: float, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def call(self, x):
        return keras.quantizers.fake_quant_with_min_max_vars(x, self.low, self.high, num_bits=8)


def _fake_quant_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = _FixedRangeFakeQuant(0.0, 1.0)(inputs)
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(10)
    logits = dense(x)
    model = keras.Model(inputs, _FixedRangeFakeQuant(-4.0, 4.0)(logits))
    kernel, bias = dense.get_weights()
    scale = np.abs(kernel).max() / 127.0
    dense.set_weights([np.round(kernel / scale) * scale, bias])  # weights already on the int8 grid
    return model


def test_fake_quant_model_converts_to_int8_without_calibration_data(digits):
    model = _fake_quant_model()
    flatbuffer = tfc.convert(model, "int8")
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    output = report.tensors[report.outputs[0]]
    assert output.quantization.scale[0] == pytest.approx(8.0 / 255.0, rel=1e-3)
    expected = model.predict(digits.x_test, verbose=0)
    got = run_tflite(flatbuffer, digits.x_test)
    assert np.abs(got - expected).max() <= 2 * output.quantization.scale[0]


def test_float_model_in_int8_mode_without_data_says_what_to_pass(trained_digits_cnn):
    with pytest.raises(tfc.ConversionError, match="representative_data"):
        tfc.convert(trained_digits_cnn, "int8")


def test_a_never_trained_qat_model_is_refused_without_data_and_warned_with_it(digits):
    from tfcompress.models import build_digits_cnn

    keras.utils.set_random_seed(0)
    qat = tfc.quantize_model(build_digits_cnn(width=4))
    with pytest.raises(tfc.ConversionError, match=r"was never trained.*fit first"):
        tfc.convert(qat, "int8")
    with pytest.warns(UserWarning, match="initial range"):
        tfc.convert(qat, "int8", digits.x_train[:32])
    # one batch of training gives every range a value: the file converts as the README shows
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(digits.x_train[:64], digits.y_train[:64], batch_size=64, epochs=1, verbose=0)
    assert tfc.inspect(tfc.convert(qat, "int8")).float_ops == []
