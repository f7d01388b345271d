"""QAT options against real TFLite files: LSQ, 1-8 bit weights, 16-bit activations, stripping."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.outputs import inference
from tfcompress.converter import ConversionError, run_tflite
from tfcompress.core.graph import clone_with_weights
from tfcompress.data import Split
from tfcompress.models import build_digits_cnn, compile_classifier
from tfcompress.quantization import (
    ActivationQuantizer,
    QuantizeWrapper,
    is_quantization_aware,
    quantize_model,
    strip_quantization,
)


def _kernels(flatbuffer: bytes) -> list:
    report = tfc.inspect(flatbuffer)
    kernel_ops = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    return [report.tensors[op.inputs[1]] for op in report.ops if op.name in kernel_ops]


def _agreement(model: keras.Model, flatbuffer: bytes, x: np.ndarray) -> float:
    keras_top1 = model.predict(x, verbose=0).argmax(axis=1)
    return float(np.mean(keras_top1 == run_tflite(flatbuffer, x).argmax(axis=1)))


def test_learned_step_sizes_train_convert_and_round_trip(
    tmp_path, digits: Split, trained_digits_cnn: keras.Model
) -> None:
    keras.utils.set_random_seed(0)
    qat = quantize_model(clone_with_weights(trained_digits_cnn), learned_step=True)
    compile_classifier(qat, learning_rate=1e-3)
    wrapper = next(layer for layer in qat.layers if isinstance(layer, QuantizeWrapper))
    start = wrapper.weight_log_step.numpy().copy()
    qat.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, verbose=0)
    assert not np.allclose(wrapper.weight_log_step.numpy(), start)  # the steps were learned
    flatbuffer = tfc.convert(qat, mode="int8")
    assert tfc.inspect(flatbuffer).float_ops == []
    float_accuracy = trained_digits_cnn.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    assert tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test) >= float_accuracy - 0.003
    assert _agreement(qat, flatbuffer, digits.x_test) >= 0.99
    qat.save(tmp_path / "lsq.keras")
    loaded = keras.saving.load_model(tmp_path / "lsq.keras")
    np.testing.assert_array_equal(
        loaded.predict(digits.x_test, verbose=0), qat.predict(digits.x_test, verbose=0)
    )


@pytest.mark.parametrize(("bits", "levels"), [(1, 2), (2, 3), (4, 15)])
def test_low_bit_weights_are_stored_as_few_int8_levels(
    bits: int, levels: int, digits: Split, trained_digits_cnn: keras.Model
) -> None:
    keras.utils.set_random_seed(0)
    qat = compile_classifier(
        quantize_model(clone_with_weights(trained_digits_cnn), weight_bits=bits)
    )
    qat.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    flatbuffer = tfc.convert(qat, mode="int8")
    qmax = max(2 ** (bits - 1) - 1, 1)
    for kernel in _kernels(flatbuffer):
        assert kernel.dtype == "INT8"  # runs on every int8 runtime and the Edge TPU
        assert np.abs(kernel.buffer).max() <= qmax
        per_channel = [len(np.unique(kernel.buffer[c])) for c in range(kernel.buffer.shape[0])]
        assert max(per_channel) <= levels
    # A ternary/binary net has more near-ties between logits, so a rounding flips a few more.
    assert _agreement(qat, flatbuffer, digits.x_test) >= 0.97


def test_16_bit_activations_export_to_int16x8(
    digits: Split, trained_digits_cnn: keras.Model
) -> None:
    keras.utils.set_random_seed(0)
    qat = quantize_model(clone_with_weights(trained_digits_cnn), activation_bits=16)
    assert {q.num_bits for q in qat.layers if isinstance(q, ActivationQuantizer)} == {16}
    compile_classifier(qat, learning_rate=1e-3)
    qat.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0)
    flatbuffer = tfc.convert(qat, "int16x8", representative_data=digits.x_train[:200])
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    assert report.tensors[report.inputs[0]].dtype == "INT16"
    assert {k.dtype for k in _kernels(flatbuffer)} == {"INT8"}
    assert _agreement(qat, flatbuffer, digits.x_test) >= 0.99


def test_int16x8_export_of_a_qat_model_needs_representative_data(
    trained_digits_cnn: keras.Model,
) -> None:
    qat = quantize_model(trained_digits_cnn, activation_bits=16)
    with pytest.raises(ConversionError, match="int16x8.*representative_data"):
        tfc.convert(qat, "int16x8")


def test_int8_export_of_a_16_bit_qat_model_says_to_use_int16x8(
    trained_digits_cnn: keras.Model,
) -> None:
    qat = quantize_model(trained_digits_cnn, activation_bits=16)
    with pytest.raises(ConversionError, match="16-bit activations.*int16x8"):
        tfc.convert(qat, "int8")


def test_strip_quantization_bakes_in_the_deployed_weights(
    digits: Split, trained_digits_cnn: keras.Model
) -> None:
    qat = quantize_model(trained_digits_cnn, weight_bits=4)
    qat(digits.x_train[:256], training=True)  # set the activation ranges
    plain = strip_quantization(qat)
    assert is_quantization_aware(qat) and not is_quantization_aware(plain)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    for layer in plain.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel.numpy()
            step = np.abs(kernel).max(axis=(0, 1, 2)) / 7.0
            np.testing.assert_allclose(kernel / step, np.round(kernel / step), atol=1e-4)
    # Only the activation fake quant differs: the float model of the QAT weights agrees.
    agree = np.mean(
        plain.predict(digits.x_test, verbose=0).argmax(1)
        == qat.predict(digits.x_test, verbose=0).argmax(1)
    )
    assert agree >= 0.98


def test_bad_bit_widths_name_the_argument() -> None:
    model = build_digits_cnn(width=4)
    with pytest.raises(ValueError, match="activation_bits must be 8 or 16"):
        quantize_model(model, activation_bits=4)
    with pytest.raises(ValueError, match=r"weight_bits must be an int in \[1, 8\]"):
        quantize_model(model, weight_bits=0)


def test_16_bit_recurrent_qat_model_exports_to_int16x8(rng) -> None:
    """Baking the weights in turns the unrolled QAT recurrences into float unrolled ones."""
    inputs = keras.Input((4, 4))
    sequence = keras.layers.LSTM(6, return_sequences=True)(inputs)
    hidden = keras.layers.Bidirectional(keras.layers.GRU(4))(sequence)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    qat = quantize_model(model, activation_bits=16)
    x = rng.normal(size=(64, 4, 4)).astype("float32")
    qat(x, training=True)  # ranges only
    assert not is_quantization_aware(strip_quantization(qat))
    flatbuffer = tfc.convert(qat, "int16x8", representative_data=x)
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    assert report.tensors[report.inputs[0]].dtype == "INT16"
    np.testing.assert_allclose(run_tflite(flatbuffer, x), inference(qat, x), atol=0.01)


def test_masked_recurrent_model_converts_to_int16x8_with_an_exact_mask(rng) -> None:
    """TFLite's int16 requantization wraps around past a 2^16 rescale: the mask sharpens in steps.

    With the 8-bit mask (one x1e6 step) every kept step came out negative in the file, and the
    LSTM's outputs up to 2 off. Inputs span +-50 here, a harder rescale than digits' [0, 1].
    """
    inputs = keras.Input((6, 4))
    hidden = keras.layers.LSTM(8)(keras.layers.Masking(name="padding")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    x = 50 * rng.uniform(-1, 1, size=(64, 6, 4)).astype("float32")
    for row, length in enumerate(rng.integers(2, 7, size=len(x))):
        x[row, length:] = 0.0
    qat = quantize_model(model, activation_bits=16)
    qat(x, training=True)  # ranges only
    for source in (model, qat):
        flatbuffer = tfc.convert(source, "int16x8", representative_data=x)
        assert tfc.inspect(flatbuffer).float_ops == []
        # 16-bit rounding through 6 steps of an untrained LSTM: 0.01-0.04 over 4 seeds; a wrong
        # mask is off by 1 or more
        np.testing.assert_allclose(run_tflite(flatbuffer, x), inference(source, x), atol=0.1)


def test_masked_average_in_int16x8_is_refused_with_what_to_do(rng) -> None:
    """A masked GlobalAveragePooling1D divides, and TFLite has no 16-bit DIV kernel."""
    inputs = keras.Input((4, 4))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Masking()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    x = rng.normal(size=(8, 4, 4)).astype("float32")
    with pytest.raises(ConversionError, match="int16x8.*'pool'.*DIV.*mode='int8'"):
        tfc.convert(model, "int16x8", representative_data=x)
