"""LiteRT runtime helpers: predictions, evaluation metrics and latency."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.fixtures.pretrained import pretrained
from tfcompress.converter import run_tflite


@pytest.fixture(scope="session")
def float_bytes(trained_digits_cnn):
    return tfc.convert(trained_digits_cnn, "float32")


def test_run_tflite_matches_keras_for_any_batch_size(float_bytes, trained_digits_cnn, digits):
    expected = trained_digits_cnn.predict(digits.x_test[:37], verbose=0)
    for batch_size in (1, 10, 256):
        got = run_tflite(float_bytes, digits.x_test[:37], batch_size=batch_size)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_evaluate_tflite_equals_keras_accuracy(float_bytes, trained_digits_cnn, digits):
    keras_accuracy = trained_digits_cnn.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    assert tfc.evaluate_tflite(float_bytes, digits.x_test, digits.y_test) == pytest.approx(
        keras_accuracy, abs=1e-6
    )


def test_evaluate_tflite_dequantizes_int8_outputs(trained_digits_cnn, digits):
    int8 = tfc.convert(trained_digits_cnn, "int8", digits.x_train[:100])
    keras_logits = trained_digits_cnn.predict(digits.x_test, verbose=0)
    tflite_logits = run_tflite(int8, digits.x_test)
    assert tflite_logits.dtype == np.float32
    assert np.mean(np.abs(tflite_logits - keras_logits)) < 0.1 * np.abs(keras_logits).mean()


def test_regression_metrics(float_bytes, trained_digits_cnn, digits):
    targets = trained_digits_cnn.predict(digits.x_test[:20], verbose=0)
    assert tfc.evaluate_tflite(float_bytes, digits.x_test[:20], targets, metric="mae") < 1e-4
    with pytest.raises(ValueError, match="Unknown metric"):
        tfc.evaluate_tflite(float_bytes, digits.x_test, digits.y_test, metric="f1")


def test_mismatched_labels_are_an_error(float_bytes, digits):
    with pytest.raises(ValueError, match="y has 3"):
        tfc.evaluate_tflite(float_bytes, digits.x_test, digits.y_test[:3])


@pytest.mark.parametrize("builtin_only", [False, True])
def test_benchmark_reports_median_and_p90(float_bytes, builtin_only):
    latency = tfc.benchmark_tflite(float_bytes, runs=20, warmup=2, builtin_only=builtin_only)
    assert 0 < latency.min_ms <= latency.median_ms <= latency.p90_ms
    assert latency.runs == 20 and latency.delegate == ("builtin" if builtin_only else "xnnpack")


def test_benchmark_rejects_bad_arguments(float_bytes):
    with pytest.raises(ValueError, match="runs >= 1"):
        tfc.benchmark_tflite(float_bytes, runs=0)


def _with_custom_op(flatbuffer: bytes, op_name: str, custom_code: str) -> bytes:
    """A third-party style file: the first `op_name` op turned into a custom op LiteRT lacks."""
    import flatbuffers

    from tfcompress.core import compat

    schema = compat.tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    op = next(
        op
        for op in model.subgraphs[0].operators
        if names[model.operatorCodes[op.opcodeIndex].builtinCode] == op_name
    )
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = custom_code.encode()
    code.version = 1
    model.operatorCodes.append(code)
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.builtinOptionsType, op.builtinOptions = 0, None
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_custom_op_the_runtime_lacks_is_named_everywhere(float_bytes, digits, tmp_path):
    path = tmp_path / "vendor.tflite"
    path.write_bytes(_with_custom_op(float_bytes, "MEAN", "VendorGlobalPool"))
    assert "CUSTOM:VendorGlobalPool" in tfc.inspect(path).op_counts
    calls = {
        "evaluate": lambda: tfc.evaluate_tflite(path, digits.x_test, digits.y_test),
        "bench": lambda: tfc.benchmark_tflite(path, runs=1, warmup=0),
        "run": lambda: run_tflite(path, digits.x_test[:2]),
    }
    for name, call in calls.items():
        with pytest.raises(tfc.TFLiteFileError) as caught:
            call()
        message = str(caught.value)
        assert "VendorGlobalPool" in message and "needs a runtime" in message, name
        assert "vendor.tflite" in message and "convert the model again" not in message, name


@pytest.fixture(scope="session")
def two_head_model(digits):
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    digit = keras.layers.Dense(10, name="digit")(hidden)
    parity = keras.layers.Dense(2, name="parity")(hidden)
    model = keras.Model(inputs, [digit, parity])
    model.compile("adam", [keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 2)

    def train() -> None:
        model.fit(
            digits.x_train,
            [digits.y_train, digits.y_train % 2],
            epochs=10,
            batch_size=32,
            verbose=0,
        )

    pretrained("runtime-two-heads", model, train)
    return model, tfc.convert(model, "float32")


def test_multi_output_evaluation_needs_the_output_named(two_head_model, digits):
    model, flatbuffer = two_head_model
    names = tfc.inspect(flatbuffer).output_names
    assert len(names) == 2
    with pytest.raises(ValueError, match="2 outputs") as caught:
        tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test)
    assert all(name in str(caught.value) for name in names)
    digit_logits, parity_logits = model.predict(digits.x_test, verbose=0)
    keras_scores = {
        10: np.mean(digit_logits.argmax(-1) == digits.y_test),
        2: np.mean(parity_logits.argmax(-1) == digits.y_test % 2),
    }
    outputs = run_tflite(flatbuffer, digits.x_test)
    for position, name in enumerate(names):
        classes = outputs[position].shape[-1]
        labels = digits.y_test if classes == 10 else digits.y_test % 2
        by_position = tfc.evaluate_tflite(flatbuffer, digits.x_test, labels, output=position)
        by_name = tfc.evaluate_tflite(flatbuffer, digits.x_test, labels, output=name)
        assert by_position == by_name == pytest.approx(keras_scores[classes], abs=1e-6)
        assert by_position > 1.0 / classes + 0.3  # trained: well above chance
    with pytest.raises(ValueError, match="out of range"):
        tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test, output=2)
    with pytest.raises(ValueError, match="no output named 'nope'"):
        tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test, output="nope")


def test_a_stateful_lstm_file_starts_every_batch_from_zero_state():
    # the plain TFLite converter fuses a tf_keras LSTM into UNIDIRECTIONAL_SEQUENCE_LSTM, whose
    # state lives in variable tensors that outlive an invoke; a user may bring such a file
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.Input((6, 4), batch_size=1), tf_keras.layers.LSTM(8), tf_keras.layers.Dense(3)]
    )
    function = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec([1, 6, 4], tf.float32)
    )
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([function], model).convert()
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in tfc.inspect(flatbuffer).op_counts
    x = np.random.default_rng(0).normal(size=(5, 6, 4)).astype(np.float32)

    got = run_tflite(flatbuffer, x)

    np.testing.assert_allclose(got, model.predict(x, batch_size=1, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(run_tflite(flatbuffer, x[::-1]), got[::-1])


def _regressor() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def test_a_regression_is_scored_by_its_error_never_a_silent_accuracy(rng):
    model = _regressor()
    x = rng.normal(size=(64, 4)).astype("float32")
    y = model.predict(x, verbose=0)[:, 0] + 0.1
    flatbuffer = tfc.convert(model, "float32")
    assert tfc.evaluate_tflite(flatbuffer, x, y) == pytest.approx(0.1, abs=1e-4)  # MAE
    with pytest.raises(ValueError, match="needs class labels.*metric='mae'"):
        tfc.evaluate_tflite(flatbuffer, x, y, metric="accuracy")


def test_uint8_images_run_as_model_predict_takes_them(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    images = rng.integers(0, 256, (16, 8, 8, 1)).astype("uint8")
    flatbuffer = tfc.convert(model, "int8", images)
    as_floats = run_tflite(flatbuffer, images.astype("float32"))
    np.testing.assert_array_equal(run_tflite(flatbuffer, images), as_floats)
    labels = model.predict(images, verbose=0).argmax(-1)
    assert tfc.evaluate_tflite(flatbuffer, images, labels) >= 0.9
